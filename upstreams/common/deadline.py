"""The caller's deadline, from X-Request-Timeout-Ms or grpc-timeout, as seen by an upstream."""

from __future__ import annotations

import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from upstreams.common.errors import UpstreamError

__all__ = ["DeadlineMiddleware", "ensure_time_left", "parse_timeout_header"]

_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_deadline: ContextVar[float | None] = ContextVar("upstream_deadline", default=None)


def parse_timeout_header(headers: list[tuple[bytes, bytes]]) -> float | None:
    """Seconds the caller still waits, from ``x-request-timeout-ms`` or ``grpc-timeout``."""
    for name, value in headers:
        try:
            if name == b"x-request-timeout-ms":
                ms = int(value)
                return ms / 1000 if ms >= 0 else None
            if name == b"grpc-timeout" and len(value) >= 2:
                text = value.decode()
                return int(text[:-1]) * _GRPC_UNITS[text[-1]]
        except (ValueError, KeyError, UnicodeDecodeError):
            return None
    return None


def ensure_time_left() -> None:
    """Raise a 504 when the caller's deadline has passed: the answer could not be delivered."""
    at = _deadline.get()
    if at is not None and time.monotonic() >= at:
        raise UpstreamError(504, "deadline exceeded before the work started", "deadline_exceeded")


class DeadlineMiddleware:
    """Keeps the caller's deadline for the request, so handlers can skip work past it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its deadline set."""
        budget = parse_timeout_header(scope["headers"]) if scope["type"] == "http" else None
        if budget is None:
            await self.app(scope, receive, send)
            return
        token = _deadline.set(time.monotonic() + budget)
        try:
            await self.app(scope, receive, send)
        finally:
            _deadline.reset(token)
