"""Route dependencies as Annotated aliases, resolved from the container."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.markers import AsyncProvide
from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.ml_workbench import MLWorkbenchClient
from app.containers import Container
from app.observability.lifecycle import Lifecycle
from app.observability.status import DependencyView
from settings import Settings

__all__ = [
    "AnalysisEngineDep",
    "BearerDep",
    "DependencyViewsDep",
    "LifecycleDep",
    "MLWorkbenchDep",
    "SettingsDep",
]

AnalysisEngineDep = Annotated[AnalysisEngineClient, Depends(AsyncProvide[Container.analysis_engine.client])]
MLWorkbenchDep = Annotated[MLWorkbenchClient, Depends(AsyncProvide[Container.ml_workbench.client])]
SettingsDep = Annotated[Settings, Depends(AsyncProvide[Container.settings])]
DependencyViewsDep = Annotated[list[DependencyView], Depends(AsyncProvide[Container.dependency_views])]
LifecycleDep = Annotated[Lifecycle, Depends(AsyncProvide[Container.lifecycle])]
#: The request's bearer token, if any; the route decides what a missing one means (and
#: /docs shows an "Authorize" button for it).
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]
