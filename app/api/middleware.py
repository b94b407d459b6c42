"""ASGI middleware: the request id every outbound call of a request carries."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import request_id_var

__all__ = ["RequestIdMiddleware"]

_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes a well-formed inbound ``X-Request-ID`` or makes one, and echoes it back.

    A plain ASGI middleware (not ``BaseHTTPMiddleware``): it adds no task per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with ``request_id_var`` set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbound = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        # An ill-formed inbound id is replaced, so callers cannot inject into our logs.
        request_id = inbound.decode() if inbound and _VALID.match(inbound) else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
