"""The dependency-injector container: provider declarations only."""

from __future__ import annotations

from dependency_injector import containers, providers
from dependency_injector.ext.starlette import Lifespan

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.config import ClientConfig
from app.clients.ml_workbench import MLWorkbenchClient
from app.clients.policies import (
    adaptive_from_config,
    breaker_from_config,
    budget_from_config,
    bulkhead_from_config,
    hedging_from_config,
    observer_from_config,
    rate_limiter_from_config,
    retry_from_config,
)
from app.clients.resources import client_resource, session_resource
from app.observability.lifecycle import Lifecycle
from app.observability.status import DependencyView
from app.resilience.clock import MONOTONIC
from settings import load_settings

__all__ = ["Container", "UpstreamContainer"]


class UpstreamContainer(containers.DeclarativeContainer):
    """One upstream: its config slice, policies (Singletons), session and client (Resources).

    The optional policies (budget, rate limiter, hedging, adaptive limit) are None
    when their feature is off in the config.
    """

    config = providers.Dependency(instance_of=ClientConfig)
    client_class = providers.Dependency(instance_of=type)
    #: Whether the service can answer without this upstream (readiness only).
    essential = providers.Dependency(instance_of=bool, default=True)
    clock = providers.Object(MONOTONIC)

    breaker = providers.Singleton(breaker_from_config, config, clock)
    bulkhead = providers.Singleton(bulkhead_from_config, config)
    retry = providers.Singleton(retry_from_config, config)
    budget = providers.Singleton(budget_from_config, config, clock)
    rate_limiter = providers.Singleton(rate_limiter_from_config, config, clock)
    hedging = providers.Singleton(hedging_from_config, config)
    adaptive = providers.Singleton(adaptive_from_config, config)
    observer = providers.Singleton(observer_from_config, config, breaker, bulkhead, clock)

    view = providers.Singleton(
        DependencyView,
        config.provided.service_name,
        breaker,
        bulkhead,
        observer,
        budget=budget,
        adaptive=adaptive,
        essential=essential,
    )

    #: Every policy a client of this upstream shares, as its constructor's keywords: the
    #: lifespan's client and the factory path's are built from this one list.
    policies = providers.Dict(
        breaker=breaker,
        bulkhead=bulkhead,
        retry=retry,
        budget=budget,
        rate_limiter=rate_limiter,
        hedging=hedging,
        adaptive=adaptive,
        observer=observer,
        clock=clock,
    )

    session = providers.Resource(session_resource, config)
    client = providers.Resource(client_resource, client_class, config, session=session, policies=policies)


class Container(containers.DeclarativeContainer):
    """The gateway's container; its lifespan opens and closes every Resource."""

    __self__ = providers.Self()

    settings = providers.Singleton(load_settings)

    analysis_engine = providers.Container(
        UpstreamContainer,
        config=settings.provided.analysis_engine,
        client_class=providers.Object(AnalysisEngineClient),
        essential=settings.provided.is_essential.call("analysis_engine"),
    )
    ml_workbench = providers.Container(
        UpstreamContainer,
        config=settings.provided.ml_workbench,
        client_class=providers.Object(MLWorkbenchClient),
        essential=settings.provided.is_essential.call("ml_workbench"),
    )

    #: Every dependency's live status, in a fixed order, for readiness and the dashboard.
    dependency_views = providers.List(analysis_engine.view, ml_workbench.view)

    #: Draining or not: set on SIGTERM, read by readiness and the status stream.
    lifecycle = providers.Singleton(Lifecycle)

    lifespan = providers.Singleton(Lifespan, __self__)
