"""Liveness and readiness: is the process up, and can each dependency be called."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from dependency_injector.wiring import inject
from fastapi import APIRouter, Response

from app.api.deps import (
    AnalysisEngineBreakerDep,
    AnalysisEngineBulkheadDep,
    MLWorkbenchBreakerDep,
    MLWorkbenchBulkheadDep,
    SettingsDep,
)
from app.api.responses import JsonBytesResponse
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Response:
    """Liveness: the process answers."""
    return JsonBytesResponse({"status": "ok"})


def _dependency(breaker: CircuitBreakerPolicy, bulkhead: Bulkhead) -> dict[str, object]:
    return {
        "breaker": breaker.state_name,
        "seconds_until_half_open": round(breaker.seconds_until_half_open(), 3),
        "bulkhead": {
            "in_flight": bulkhead.in_flight,
            "queued": bulkhead.queued,
            "limit": bulkhead.max_concurrent,
        },
    }


@router.get("/health/ready")
@inject
async def ready(
    settings: SettingsDep,
    ae_breaker: AnalysisEngineBreakerDep,
    ae_bulkhead: AnalysisEngineBulkheadDep,
    ml_breaker: MLWorkbenchBreakerDep,
    ml_bulkhead: MLWorkbenchBulkheadDep,
) -> Response:
    """Readiness: each dependency with its breaker; 503 while a breaker is open."""
    deps = {
        settings.analysis_engine.service_name: _dependency(ae_breaker, ae_bulkhead),
        settings.ml_workbench.service_name: _dependency(ml_breaker, ml_bulkhead),
    }
    is_open = any(d["breaker"] == "open" for d in deps.values())
    return JsonBytesResponse(
        {"status": "degraded" if is_open else "ready", "dependencies": deps},
        status_code=503 if is_open else 200,
    )
