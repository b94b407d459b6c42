"""Liveness and readiness: is the process up, and can it answer without what is down."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from dependency_injector.wiring import inject
from fastapi import APIRouter, Response

from app.api.deps import DependencyViewsDep, LifecycleDep
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.api.schemas import Health, Readiness

__all__ = ["router"]

router = APIRouter(route_class=InjectedRoute, tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Response:
    """Liveness: the process answers."""
    return JsonBytesResponse({"status": "ok"})


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Draining, or an essential dependency is unavailable."}
    },
)
@inject
async def ready(views: DependencyViewsDep, lifecycle: LifecycleDep) -> Response:
    """Readiness: 503 while an essential dependency's breaker is open, or while draining.

    A degradable dependency (``APP_ESSENTIAL_DEPENDENCIES`` leaves it out) with its
    breaker open makes the service ``degraded``, still 200: it answers without it.
    """
    statuses = {view.readiness_status for view in views}
    if lifecycle.draining:
        status = "draining"
    elif "unavailable" in statuses:
        status = "unavailable"
    elif "degraded" in statuses:
        status = "degraded"
    else:
        status = "ready"
    return JsonBytesResponse(
        {"status": status, "dependencies": {v.name: v.readiness() for v in views}},
        status_code=503 if status in ("draining", "unavailable") else 200,
    )
