"""The dependency-injector container: provider declarations only."""

from __future__ import annotations

from dependency_injector import containers, providers
from dependency_injector.ext.starlette import Lifespan

from app.clients.config import ClientConfig
from app.clients.policies import ClientPolicies
from app.clients.registry import client_class_for
from app.clients.resources import (
    client_resource,
    session_resource,
    shared_state_or_none,
    shared_state_resource,
)
from app.live_config import live_config_resource
from app.observability.lifecycle import Lifecycle
from app.observability.status import DependencyView
from app.resilience.clock import MONOTONIC
from app.state import SharedState
from app.upstream_registry import UpstreamRegistry, open_configured_upstreams
from settings import ConfigStore, load_settings

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
    #: The process's Redis (the parent's), or None: shared state is off by default.
    shared_state: providers.Provider[SharedState | None] = providers.Object(None)

    #: Every policy a client of this upstream shares: the lifespan's client and the
    #: factory path's get this one object.
    policies = providers.Singleton(ClientPolicies.from_config, config, clock, shared_state=shared_state)
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
        fleet=policies.provided.fleet_status,
        shared=policies.provided.shared_status,
        cache=policies.provided.cache_status,
        fleet_command=policies.provided.fleet_command,
    )

    session = providers.Resource(session_resource, config)
    client = providers.Resource(client_resource, client_class, config, session=session, policies=policies)


class Container(containers.DeclarativeContainer):
    """The gateway's container; its lifespan opens and closes every Resource.

    Upstreams come from ``settings.upstreams``. The gateway's own two are declared here,
    because its routes are bound to them when they are imported; ``upstreams`` holds
    those and every other configured upstream by name (see ``UpstreamRegistry``).
    """

    __self__ = providers.Self()

    settings = providers.Singleton(load_settings)

    #: Shared state between replicas: one Redis client per process when ``APP_REDIS_URL``
    #: is set, else None (nothing shared, nothing opened); started and stopped by the lifespan.
    shared_state = providers.Singleton(shared_state_or_none, settings.provided.shared_state_settings.call())
    shared_state_open = providers.Resource(shared_state_resource, shared_state)

    # Config, client class and role come from the same places as any upstream's: the
    # settings entry, the class bound to the name (app.clients.registry), the settings.
    analysis_engine = providers.Container(
        UpstreamContainer,
        config=settings.provided.upstreams["analysis_engine"],
        client_class=providers.Callable(client_class_for, "analysis_engine"),
        essential=settings.provided.is_essential.call("analysis_engine"),
        shared_state=shared_state,
    )
    ml_workbench = providers.Container(
        UpstreamContainer,
        config=settings.provided.upstreams["ml_workbench"],
        client_class=providers.Callable(client_class_for, "ml_workbench"),
        essential=settings.provided.is_essential.call("ml_workbench"),
        shared_state=shared_state,
    )

    #: Every upstream's sub-container by name: the declared ones above, and one
    #: UpstreamContainer for each upstream known only from the settings.
    upstreams = providers.Singleton(
        UpstreamRegistry,
        settings,
        declared=providers.Dict(analysis_engine=analysis_engine, ml_workbench=ml_workbench),
        container_class=providers.Object(UpstreamContainer),
        shared_state=shared_state,
    )
    #: The lifespan opens the declared upstreams' Resources itself, and the others through this.
    configured_upstreams = providers.Resource(open_configured_upstreams, upstreams)

    #: The settings in force, as a versioned snapshot that reloads (the file, SIGHUP); version
    #: 1 is ``settings`` (so an overridden one too). The lifespan's ``live_config`` applies
    #: each reload to the upstreams in place and starts what triggers them.
    config_store = providers.Singleton(ConfigStore, settings.provided.env, initial=settings)
    live_config = providers.Resource(live_config_resource, config_store, upstreams, shared_state)

    #: Every dependency's live status, in the registry's order, for readiness and the dashboard.
    dependency_views = upstreams.provided.views.call()

    #: Draining or not: set on SIGTERM, read by readiness and the status stream.
    lifecycle = providers.Singleton(Lifecycle)

    lifespan = providers.Singleton(Lifespan, __self__)
