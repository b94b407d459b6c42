"""The dependency-injector container: provider declarations only."""

from __future__ import annotations

from dependency_injector import containers, providers
from dependency_injector.ext.starlette import Lifespan

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.config import ClientConfig
from app.clients.ml_workbench import MLWorkbenchClient
from app.clients.policies import ClientPolicies
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

    #: Every policy a client of this upstream shares: the lifespan's client and the
    #: factory path's get this one object.
    policies = providers.Singleton(ClientPolicies.from_config, config, clock)
    breaker = policies.provided.breaker
    bulkhead = policies.provided.bulkhead
    retry = policies.provided.retry
    budget = policies.provided.budget
    rate_limiter = policies.provided.rate_limiter
    hedging = policies.provided.hedging
    adaptive = policies.provided.adaptive
    observer = policies.provided.observer

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
