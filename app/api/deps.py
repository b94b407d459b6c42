"""Route dependencies as Annotated aliases, resolved from the container."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.markers import AsyncProvide
from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.ml_workbench import MLWorkbenchClient
from app.containers import Container
from app.observability.lifecycle import Lifecycle
from app.observability.status import DependencyView
from app.state import SharedState
from settings import ConfigStore, Settings

__all__ = [
    "AnalysisEngineDep",
    "BearerDep",
    "ConfigStoreDep",
    "DependencyViewsDep",
    "LifecycleDep",
    "MLWorkbenchDep",
    "SettingsDep",
    "SharedStateDep",
    "UpstreamClient",
]


def _resolved(marker: AsyncProvide) -> Any:
    """``Depends(marker)``, request-scoped: see ``AsyncProvide`` for why the scope is declared."""
    return Depends(marker, scope="request")


def UpstreamClient(name: str) -> Any:  # noqa: N802 - a marker, capitalised like FastAPI's Depends
    """The client of the upstream ``name`` from the container, as a FastAPI dependency.

    For an upstream of your own: ``PricingDep = Annotated[PricingClient, UpstreamClient("pricing")]``
    and a route parameter ``client: PricingDep``, with ``@inject`` innermost, in a module
    ``create_app`` wires (pass its router in ``routers=``; ``route_class=InjectedRoute``
    on that router saves FastAPI's and ``@inject``'s work per request). The client is the one the
    lifespan opened, an instance of the class bound to ``name`` (``@upstream_client``);
    ``app.clients.testing.override_client`` swaps it.
    """
    return _resolved(AsyncProvide(Container.upstreams.provided.client.call(name)))


# The gateway's own upstreams, through their declared providers: one lookup fewer per
# request than UpstreamClient("analysis_engine"), the same client.
AnalysisEngineDep = Annotated[AnalysisEngineClient, _resolved(AsyncProvide[Container.analysis_engine.client])]
MLWorkbenchDep = Annotated[MLWorkbenchClient, _resolved(AsyncProvide[Container.ml_workbench.client])]
#: The settings in force: the live config store's current snapshot, so a reload reaches
#: the routes that read them (the signal's model id).
SettingsDep = Annotated[Settings, _resolved(AsyncProvide[Container.config_store.provided.settings])]
ConfigStoreDep = Annotated[ConfigStore, _resolved(AsyncProvide[Container.config_store])]
SharedStateDep = Annotated[SharedState | None, _resolved(AsyncProvide[Container.shared_state])]
DependencyViewsDep = Annotated[list[DependencyView], _resolved(AsyncProvide[Container.dependency_views])]
LifecycleDep = Annotated[Lifecycle, _resolved(AsyncProvide[Container.lifecycle])]
#: The request's bearer token, if any; the route decides what a missing one means (and
#: /docs shows an "Authorize" button for it).
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]
