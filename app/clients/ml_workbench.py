"""MLWorkbenchClient: the model registry and predictions (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from app.clients.base import BaseServiceClient, operation
from app.clients.fallback import NO_FALLBACK
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


class MLWorkbenchClient(BaseServiceClient):
    """Client of the ML Workbench.

    Every method takes ``fallback=`` (see ``BaseServiceClient.request``); with one, an
    unavailable or timed-out call returns the fallback's value instead.
    """

    @operation
    async def list_models(self, *, fallback: Any = NO_FALLBACK) -> list[ModelInfo]:
        """Every model in the registry."""
        return cast(list[ModelInfo], await self.get("models", fallback=fallback))

    @operation
    async def get_model(self, model_id: str, *, fallback: Any = NO_FALLBACK) -> ModelInfo:
        """One model's description."""
        data = await self.get("models/{model_id}", path_params={"model_id": model_id}, fallback=fallback)
        return cast(ModelInfo, data)

    @operation
    async def predict(
        self,
        model_id: str,
        symbol: str,
        timeframe: str,
        features: Mapping[str, float],
        *,
        fallback: Any = NO_FALLBACK,
    ) -> Prediction:
        """A prediction from ``model_id``; pure inference, so safely retried."""
        data = await self.post(
            "models/{model_id}/predict",
            path_params={"model_id": model_id},
            json={"symbol": symbol, "timeframe": timeframe, "features": dict(features)},
            idempotent=True,
            fallback=fallback,
        )
        return cast(Prediction, data)

    list_models_sync = sync_twin(list_models)
    get_model_sync = sync_twin(get_model)
    predict_sync = sync_twin(predict)
