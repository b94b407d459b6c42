"""The gateway's HTTP API: routes, DI aliases and the error mapping."""

from app.api.errors import install_error_handlers, status_for
from app.api.middleware import RequestContextMiddleware

__all__ = ["RequestContextMiddleware", "install_error_handlers", "status_for"]
