"""Per-request context that outbound calls read: the inbound request id."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["request_id_var"]

#: The X-Request-ID of the inbound request being served, if any; outbound calls reuse it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
