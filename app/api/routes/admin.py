"""Operator actions on a dependency's breaker: reset it, or isolate it (hold it open)."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

import hmac
import logging
from typing import Annotated, Literal

from dependency_injector.wiring import inject
from fastapi import APIRouter, Path, Response
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import BearerDep, DependencyViewsDep, SettingsDep
from app.api.errors import ERROR_RESPONSES, error_responses
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.api.schemas import BreakerAction
from app.observability.status import DependencyView
from app.state import SharedStateUnavailable
from settings import Settings

__all__ = ["router"]

# create_app includes this router only when the settings enable it (admin_active):
# otherwise these paths do not exist, and answer 404 like any unknown path.
router = APIRouter(
    route_class=InjectedRoute,
    prefix="/api/v1/resilience",
    tags=["admin"],
    responses={
        **error_responses(
            {
                401: "The admin token is required (when one is configured) as a bearer token.",
                404: "No dependency of that name.",
            }
        ),
        422: ERROR_RESPONSES[422],
    },
)
log = logging.getLogger(__name__)

Service = Annotated[str, Path(max_length=100, examples=["analysis-engine-service"])]


def _refused(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> Response | None:
    """A 401 unless the request carries the configured token (none configured: no check)."""
    token = settings.admin_token
    if token is None:
        return None
    given = credentials.credentials if credentials is not None else ""
    # compare_digest: the time taken does not tell how much of a guess was right.
    if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return None
    return JsonBytesResponse(
        {"detail": "the admin token is required as a bearer token", "code": "unauthorized"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _find(views: list[DependencyView], service: str) -> DependencyView | Response:
    for view in views:
        if view.name == service:
            return view
    known = ", ".join(v.name for v in views)
    return JsonBytesResponse({"detail": f"no such dependency; known: {known}", "code": "not_found"}, 404)


async def _act(
    action: Literal["reset", "isolate"],
    service: str,
    views: list[DependencyView],
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
) -> Response:
    """Authorise, find the dependency, apply ``action`` to its breaker (every replica's if shared), answer."""
    found = _refused(settings, credentials) or _find(views, service)
    if isinstance(found, Response):
        return found
    scope = "replica"
    if found.fleet_command is not None:
        try:
            await found.fleet_command(action)
            scope = "fleet"
        except SharedStateUnavailable:
            pass  # Redis unavailable: this replica at least
    if scope == "replica":
        if action == "reset":
            found.breaker.reset()
        else:
            found.breaker.isolate()
    log.warning(
        "admin %s: the breaker of %s",
        action,
        found.name,
        extra={"fields": {"admin_action": action, "dependency": found.name}},
    )
    return JsonBytesResponse({"service": found.name, "action": action, "scope": scope, **found.readiness()})


@router.post("/{service}/reset", response_model=BreakerAction)
@inject
async def reset(
    service: Service, views: DependencyViewsDep, settings: SettingsDep, credentials: BearerDep
) -> Response:
    """Close the dependency's breaker and forget its failures (also ends an isolation)."""
    return await _act("reset", service, views, settings, credentials)


@router.post("/{service}/isolate", response_model=BreakerAction)
@inject
async def isolate(
    service: Service, views: DependencyViewsDep, settings: SettingsDep, credentials: BearerDep
) -> Response:
    """Hold the dependency's breaker open: every call fails fast (503) until a reset."""
    return await _act("isolate", service, views, settings, credentials)
