"""The ML Workbench's routes (DESIGN §6)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from upstreams.common.deadline import ensure_time_left
from upstreams.common.errors import UpstreamError
from upstreams.common.http_cache import Freshness, cached_json
from upstreams.ml_workbench.registry import Model, load_registry

__all__ = ["router"]

router = APIRouter(tags=["models"])
REGISTRY = load_registry()

ModelId = Annotated[str, Path(max_length=100)]

#: How long a cache may reuse model metadata. The registry is read once at start-up, so it
#: changes only when the service is redeployed with a new models.json: five minutes fresh,
#: ten more while one background revalidation runs (a redeploy shows within a quarter of an
#: hour), and a day while the workbench fails, since the description of a model outlives
#: an outage (a prediction call fails on its own anyway).
MODELS_FRESHNESS = Freshness(max_age=300, stale_while_revalidate=600, stale_if_error=86_400)


class PredictRequest(BaseModel):
    """``POST /models/{id}/predict`` body."""

    model_config = ConfigDict(extra="forbid")

    symbol: Annotated[str, Field(min_length=1, max_length=12)]
    timeframe: Annotated[str, Field(min_length=1, max_length=4)] = "1h"
    features: dict[str, float | None]


def _model(model_id: str) -> Model:
    model = REGISTRY.get(model_id)
    if model is None:
        raise UpstreamError(404, f"unknown model {model_id!r}; known: {', '.join(REGISTRY)}", "unknown_model")
    return model


@router.get("/models")
async def list_models(request: Request) -> Response:
    """Every model in the registry; cacheable for MODELS_FRESHNESS, 304 on a matching ETag."""
    return cached_json(request, [m.describe() for m in REGISTRY.values()], MODELS_FRESHNESS)


@router.get("/models/{model_id}")
async def get_model(request: Request, model_id: ModelId) -> Response:
    """One model's description; cacheable for MODELS_FRESHNESS, 304 on a matching ETag."""
    return cached_json(request, _model(model_id).describe(), MODELS_FRESHNESS)


@router.post("/models/{model_id}/predict")
async def predict(model_id: ModelId, body: PredictRequest) -> dict[str, Any]:
    """A deterministic direction prediction; a missing or non-finite feature is a 422."""
    ensure_time_left()
    model = _model(model_id)
    missing = [f for f in model.features if f not in body.features]
    if missing:
        raise UpstreamError(422, f"features: missing {missing} for model {model.id}", "validation_error")
    bad = [
        f for f in model.features if body.features[f] is None or not math.isfinite(body.features[f] or 0.0)
    ]
    if bad:
        raise UpstreamError(422, f"features: {bad} must be finite numbers", "validation_error")
    p_up = model.p_up({f: float(body.features[f] or 0.0) for f in model.features})
    up = p_up >= 0.5
    return {
        "model_id": model.id,
        "symbol": body.symbol.upper(),
        "prediction": "up" if up else "down",
        "probability": p_up if up else 1 - p_up,
    }
