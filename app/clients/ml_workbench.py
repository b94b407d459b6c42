"""MLWorkbenchClient: the model registry and predictions (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from app.clients.base import BaseServiceClient
from app.clients.fallback import NO_FALLBACK
from app.clients.operations import operation
from app.clients.registry import upstream_client
from app.clients.sync import sync_twin

__all__ = ["MLWorkbenchClient", "ModelInfo", "Prediction"]


class ModelInfo(TypedDict):
    """A model in the registry."""

    id: str
    name: str
    version: str
    features: list[str]
    classes: list[str]


class Prediction(TypedDict):
    """A direction prediction."""

    model_id: str
    symbol: str
    prediction: str
    probability: float


@upstream_client("ml_workbench")
class MLWorkbenchClient(BaseServiceClient):
    """Client of the ML Workbench.

    Every method also takes the verbs' per-call options, keyword-only (see
    ``BaseServiceClient.request``):

    * ``timeout``: the deadline of the whole call, retries included, in seconds;
    * ``headers``: extra request headers for this call;
    * ``idempotency_key``: sent as ``Idempotency-Key`` on every attempt, so the
      upstream can deduplicate; it also makes a POST safe to retry;
    * ``fallback``: a value, or a function of the error, returned instead of raising
      when the call is unavailable or timed out.

    Each has a blocking ``*_sync`` twin with the same parameters.
    """

    @operation
    async def list_models(
        self,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> list[ModelInfo]:
        """Every model in the registry."""
        data = await self.get(
            "models",
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(list[ModelInfo], data)

    @operation
    async def get_model(
        self,
        model_id: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> ModelInfo:
        """One model's description."""
        data = await self.get(
            "models/{model_id}",
            path_params={"model_id": model_id},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(ModelInfo, data)

    @operation
    async def predict(
        self,
        model_id: str,
        symbol: str,
        timeframe: str,
        features: Mapping[str, float],
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> Prediction:
        """A prediction from ``model_id``; pure inference, so safely retried."""
        data = await self.post(
            "models/{model_id}/predict",
            path_params={"model_id": model_id},
            json={"symbol": symbol, "timeframe": timeframe, "features": dict(features)},
            idempotent=True,
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(Prediction, data)

    list_models_sync = sync_twin(list_models)
    get_model_sync = sync_twin(get_model)
    predict_sync = sync_twin(predict)
