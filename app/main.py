"""create_app: the ML Integration Service (the gateway) as a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from app.api import RequestContextMiddleware, install_error_handlers
from app.api.routes import admin, gateway, health, observability
from app.containers import Container
from app.factory import use_container
from app.observability.http_metrics import HttpMetricsMiddleware
from app.observability.tracing import tracing
from app.redaction import register_secret

__all__ = ["DOCS_STATIC_URL", "create_app"]

#: Where /docs gets its Swagger UI script, styles and icon: from the gateway itself.
DOCS_STATIC_URL = "/docs-static"


def create_app(container: Container | None = None) -> FastAPI:
    """Build the gateway on ``container`` (a new one by default).

    Settings are read here, so bad configuration fails now, with a ``SettingsError``
    naming the field and its env variable. Sessions open and close with the lifespan.
    """
    container = container or Container()
    settings = container.settings()
    if settings.admin_token is not None:
        register_secret(settings.admin_token.get_secret_value())
    container.wire(modules=[admin, gateway, health, observability])
    use_container(container)

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
    if settings.admin_active:
        app.include_router(admin.router)
    return app
