"""The gateway's routers."""

from app.api.routes.config import router as config_router
from app.api.routes.gateway import router as gateway_router
from app.api.routes.health import router as health_router
from app.api.routes.observability import router as observability_router

__all__ = ["config_router", "gateway_router", "health_router", "observability_router"]
