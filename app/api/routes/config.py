"""GET /api/v1/config: the settings in force, redacted, with their version and the last reload."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from dependency_injector.wiring import inject
from fastapi import APIRouter, Response

from app.api.deps import ConfigStoreDep, SharedStateDep
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.api.schemas import ConfigView
from app.live_config import replica_versions

__all__ = ["router"]

router = APIRouter(route_class=InjectedRoute, tags=["observability"])


@router.get("/api/v1/config", response_model=ConfigView)
@inject
async def config(store: ConfigStoreDep, shared: SharedStateDep) -> Response:
    """The active settings with no secret in them: version, source file, digest, last reload, replicas."""
    return JsonBytesResponse({**store.redacted(), "replicas": replica_versions(store, shared)})
