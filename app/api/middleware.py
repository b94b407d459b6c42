"""ASGI middleware: the request id and the inbound deadline that every outbound call reads."""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import inbound_deadline_var, request_id_var

__all__ = ["RequestContextMiddleware", "parse_timeout"]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(name: bytes, value: bytes) -> float | None:
    """Seconds from ``X-Request-Timeout-Ms`` (whole ms) or ``grpc-timeout`` (e.g. ``250m``)."""
    try:
        if name == b"x-request-timeout-ms":
            ms = int(value)
            return ms / 1000 if ms >= 0 else None
        if name == b"grpc-timeout" and 2 <= len(value) <= 9:
            return int(value[:-1]) * _GRPC_UNITS[value[-1:]]
    except (ValueError, KeyError):
        return None
    return None


class RequestContextMiddleware:
    """Sets ``request_id_var`` and ``inbound_deadline_var`` for the request, and echoes the id.

    A well-formed inbound ``X-Request-ID`` is kept, anything else replaced, so callers
    cannot inject into our logs. A plain ASGI middleware, not ``BaseHTTPMiddleware``: it
    adds no task per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its context set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbound_id = None
        budget = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                inbound_id = value
            elif name in (b"x-request-timeout-ms", b"grpc-timeout") and budget is None:
                budget = parse_timeout(name, value)
        request_id = inbound_id.decode() if inbound_id and _VALID_ID.match(inbound_id) else uuid.uuid4().hex
        id_token = request_id_var.set(request_id)
        deadline_token = inbound_deadline_var.set(time.monotonic() + budget if budget is not None else None)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            inbound_deadline_var.reset(deadline_token)
            request_id_var.reset(id_token)
