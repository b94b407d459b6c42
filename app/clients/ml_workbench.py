"""MLWorkbenchClient: the model registry and predictions (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.clients.base import BaseServiceClient
from app.clients.contracts.ml_workbench import ModelInfo, ModelList, ModelRef, Prediction, PredictRequest
from app.clients.fallback import NO_FALLBACK
from app.clients.operations import operation
from app.clients.registry import upstream_client
from app.clients.sync import sync_twin

__all__ = [
    "MLWorkbenchClient",
    "ModelInfo",
    "ModelRef",
    "PredictRequest",
    "Prediction",
]

MODELS = "models"
MODEL = "models/{model_id}"
PREDICT = "models/{model_id}/predict"


@upstream_client("ml_workbench")
class MLWorkbenchClient(BaseServiceClient):
    """Client of the ML Workbench.

    Methods take and return the pydantic models of ``app.clients.contracts``. The
    arguments are checked first: an empty model id, a bad symbol or timeframe, or a
    feature that is not a finite number is an ``InvalidRequestError`` naming the field,
    and nothing is sent. The answer is checked per ``config.response_validation``
    (``strict``: a ``ResponseDecodeError`` naming the field and the endpoint template).

    Every method also takes the verbs' per-call options, keyword-only (see
    ``BaseServiceClient.request``):

    * ``timeout``: the deadline of the whole call, retries included, in seconds;
    * ``headers``: extra request headers for this call;
    * ``idempotency_key``: sent as ``Idempotency-Key`` on every attempt, so the
      upstream can deduplicate; it also makes a POST safe to retry;
    * ``fallback``: a value, or a function of the error, returned (as given, not
      checked) instead of raising when the call is unavailable or timed out;
    * ``cache``: with the client's response cache on, ``False`` bypasses it for this
      call and ``True`` caches a call it would not (the prediction's POST); None: the default.

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
        cache: bool | None = None,
    ) -> list[ModelInfo]:
        """Every model in the registry."""
        result: list[ModelInfo] = await self.get(
            MODELS,
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=ModelList,
            cache=cache,
        )
        return result

    @operation
    async def get_model(
        self,
        model_id: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
        cache: bool | None = None,
    ) -> ModelInfo:
        """One model's description."""
        ref = self.validate_request(ModelRef, {"model_id": model_id}, "GET", MODEL)
        result: ModelInfo = await self.get(
            MODEL,
            path_params={"model_id": ref.model_id},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=ModelInfo,
            cache=cache,
        )
        return result

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
        cache: bool | None = None,
    ) -> Prediction:
        """A prediction from ``model_id``; pure inference, so safely retried."""
        given = dict(features) if isinstance(features, Mapping) else features  # else the model says why
        data = {"model_id": model_id, "symbol": symbol, "timeframe": timeframe, "features": given}
        request = self.validate_request(PredictRequest, data, "POST", PREDICT)
        result: Prediction = await self.post(
            PREDICT,
            path_params={"model_id": request.model_id},
            json=request,
            idempotent=True,
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=Prediction,
            cache=cache,
        )
        return result

    list_models_sync = sync_twin(list_models)
    get_model_sync = sync_twin(get_model)
    predict_sync = sync_twin(predict)
