"""The gateway's routers."""

from app.api.routes.gateway import router as gateway_router
from app.api.routes.health import router as health_router

__all__ = ["gateway_router", "health_router"]
