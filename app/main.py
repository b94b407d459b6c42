"""create_app: the ML Integration Service (the gateway) as a FastAPI app."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from app.api import RequestContextMiddleware, install_error_handlers
from app.api.routes import admin, config, gateway, health, observability
from app.containers import Container
from app.factory import use_container
from app.observability.http_metrics import HttpMetricsMiddleware
from app.observability.tracing import tracing
from app.redaction import register_secret
from settings import SettingsError

__all__ = ["DOCS_STATIC_URL", "create_app"]

#: Where /docs gets its Swagger UI script, styles and icon: from the gateway itself.
DOCS_STATIC_URL = "/docs-static"


def _modules_of(routers: Sequence[APIRouter]) -> list[ModuleType]:
    """The modules that define the routers' endpoints: where their ``@inject`` markers are."""
    endpoints = [getattr(route, "endpoint", None) for router in routers for route in router.routes]
    names = {endpoint.__module__ for endpoint in endpoints if endpoint is not None}
    return [sys.modules[name] for name in sorted(names) if name in sys.modules]


def _imported(spec: str) -> APIRouter:
    """The router an ``APP_ROUTERS`` entry names (``package.module:router``)."""
    module_name, _, attribute = spec.partition(":")
    try:
        router = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(
            f"invalid settings: routers (APP_ROUTERS): cannot import {spec!r}: {exc}"
        ) from exc
    if not isinstance(router, APIRouter):
        kind = type(router).__name__
        raise SettingsError(
            f"invalid settings: routers (APP_ROUTERS): {spec!r} is a {kind}, not an APIRouter"
        )
    return router


def create_app(container: Container | None = None, *, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Build the gateway on ``container`` (a new one by default), with ``routers`` of your own.

    Settings are read here, so bad configuration fails now, with a ``SettingsError``
    naming the field and its env variable. Sessions open and close with the lifespan,
    for every upstream in the settings.

    ``routers``: your routes, included after the gateway's, after those the settings name
    (``APP_ROUTERS``, imported here). The modules that define their endpoints are wired
    to the container, so a parameter typed with an ``Annotated`` alias of ``app.api.deps``
    (``UpstreamClient("pricing")`` for your own upstream) gets its client. Import them,
    and so bind your client classes (``@upstream_client``), before calling this: the
    container builds each upstream's client from that binding.
    """
    container = container or Container()
    settings = container.settings()
    routers = [*(_imported(spec) for spec in settings.routers), *routers]
    if settings.admin_token is not None:
        register_secret(settings.admin_token.get_secret_value())
    container.wire(modules=[admin, config, gateway, health, observability, *_modules_of(routers)])
    use_container(container)
    # Every upstream's sub-container now, so a bad entry fails here rather than at start-up.
    container.upstreams()

    # FastAPIOffline: /docs loads its script and styles from the gateway (assets shipped
    # in the fastapi-offline wheel), not from a CDN, so it works offline and behind a
    # strict egress policy. No /redoc: ReDoc's bundle fetches its logo from its CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="ML Integration Service",
        version="0.1.0",
        summary="Gateway to the Analysis Engine and the ML Workbench",
        lifespan=container.lifespan(),
        static_url=DOCS_STATIC_URL,
        # Swagger UI would otherwise send the schema to swagger.io's online validator.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.container = container
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(HttpMetricsMiddleware)
    if tracing.enabled:
        # Outermost, so the SERVER span covers the whole request and is the parent of
        # every client span the request makes.
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=tracing.provider)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(gateway.router)
    app.include_router(observability.router)
    app.include_router(config.router)
    if settings.admin_active:
        app.include_router(admin.router)
    for router in routers:
        app.include_router(router)
    return app
