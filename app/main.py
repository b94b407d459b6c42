"""create_app: the ML Integration Service (the gateway) as a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from app.api import RequestContextMiddleware, install_error_handlers
from app.api.routes import gateway, health
from app.clients.factory import use_container
from app.containers import Container

__all__ = ["create_app"]


def create_app(container: Container | None = None) -> FastAPI:
    """Build the gateway on ``container`` (a new one by default).

    Settings are read here, so bad configuration fails now, with a ``SettingsError``
    naming the field and its env variable. Sessions open and close with the lifespan.
    """
    container = container or Container()
    settings = container.settings()
    container.wire(modules=[gateway, health])
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
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(gateway.router)
    return app
