"""create_app: the ML Integration Service (the gateway) as a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from app.api import RequestContextMiddleware, install_error_handlers
from app.api.routes import gateway, health, observability
from app.clients.factory import use_container
from app.containers import Container
from app.observability.http_metrics import HttpMetricsMiddleware
from app.observability.tracing import tracing

__all__ = ["create_app"]


def create_app(container: Container | None = None) -> FastAPI:
    """Build the gateway on ``container`` (a new one by default).

    Settings are read here, so bad configuration fails now, with a ``SettingsError``
    naming the field and its env variable. Sessions open and close with the lifespan.
    """
    container = container or Container()
    settings = container.settings()
    container.wire(modules=[gateway, health, observability])
    use_container(container)

    app = FastAPI(
        title="ML Integration Service",
        version="0.1.0",
        summary="Gateway to the Analysis Engine and the ML Workbench",
        lifespan=container.lifespan(),
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
    return app
