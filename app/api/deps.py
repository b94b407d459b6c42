"""Route dependencies as Annotated aliases, resolved from the container."""

from __future__ import annotations

from typing import Annotated

from dependency_injector.wiring import Provide
from fastapi import Depends

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.ml_workbench import MLWorkbenchClient
from app.containers import Container
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead
from settings import Settings

__all__ = [
    "AnalysisEngineBreakerDep",
    "AnalysisEngineBulkheadDep",
    "AnalysisEngineDep",
    "MLWorkbenchBreakerDep",
    "MLWorkbenchBulkheadDep",
    "MLWorkbenchDep",
    "SettingsDep",
]

AnalysisEngineDep = Annotated[AnalysisEngineClient, Depends(Provide[Container.analysis_engine.client])]
MLWorkbenchDep = Annotated[MLWorkbenchClient, Depends(Provide[Container.ml_workbench.client])]
SettingsDep = Annotated[Settings, Depends(Provide[Container.settings])]
AnalysisEngineBreakerDep = Annotated[
    CircuitBreakerPolicy, Depends(Provide[Container.analysis_engine.breaker])
]
MLWorkbenchBreakerDep = Annotated[CircuitBreakerPolicy, Depends(Provide[Container.ml_workbench.breaker])]
AnalysisEngineBulkheadDep = Annotated[Bulkhead, Depends(Provide[Container.analysis_engine.bulkhead])]
MLWorkbenchBulkheadDep = Annotated[Bulkhead, Depends(Provide[Container.ml_workbench.bulkhead])]
