"""Liveness and readiness: is the process up, and can each dependency be called."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from dependency_injector.wiring import inject
from fastapi import APIRouter, Response

from app.api.deps import DependencyViewsDep
from app.api.responses import JsonBytesResponse

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Response:
    """Liveness: the process answers."""
    return JsonBytesResponse({"status": "ok"})


@router.get("/health/ready")
@inject
async def ready(views: DependencyViewsDep) -> Response:
    """Readiness: each dependency with its breaker; 503 while a breaker is open."""
    is_open = any(view.breaker_open for view in views)
    return JsonBytesResponse(
        {
            "status": "degraded" if is_open else "ready",
            "dependencies": {v.name: v.readiness() for v in views},
        },
        status_code=503 if is_open else 200,
    )
