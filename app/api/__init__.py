"""The gateway's HTTP API: routes, DI aliases and the error mapping."""

from app.api.errors import install_error_handlers, status_for
from app.api.middleware import RequestContextMiddleware
from app.api.routing import InjectedRoute

__all__ = ["InjectedRoute", "RequestContextMiddleware", "install_error_handlers", "status_for"]
