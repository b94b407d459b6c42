"""Per-request context that outbound calls read: the inbound request id and deadline."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["attempt_span_var", "inbound_deadline_var", "request_id_var"]

#: The X-Request-ID of the inbound request being served, if any; outbound calls reuse it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

#: The inbound request's deadline on ``time.monotonic()``, if its caller sent one;
#: every outbound call in the request fits inside it.
inbound_deadline_var: ContextVar[float | None] = ContextVar("inbound_deadline", default=None)

#: The span of the attempt being sent, in a traced call: the layer that picks the instance
#: names it there. Each hedged attempt runs in a task of its own, so each sees its own.
attempt_span_var: ContextVar[Any] = ContextVar("attempt_span", default=None)
