"""The errors both transports raise for failures below HTTP, worded in one place.

AiohttpTransport and LeanTransport must be indistinguishable to callers (the fault
matrix and the integration suite run on both and expect the same messages), so neither
spells these out itself: a reworded message here changes both at once.
"""

from __future__ import annotations

from app.errors import ClientClosedError, ClientConnectionError, ClientTimeoutError, ErrorContext

__all__ = ["CLOSED_IN_FLIGHT", "CONNECT_FAILED", "closed_in_flight", "connect_failed", "timed_out"]

#: A send ended because the client (or its transport) was closed under it.
CLOSED_IN_FLIGHT = "client closed while the call was in flight"
#: The connection was never made.
CONNECT_FAILED = "connect failed"


def timed_out(timeout: float, ctx: ErrorContext) -> ClientTimeoutError:
    """No whole answer within the attempt's ``timeout`` seconds."""
    return ClientTimeoutError(f"no response within {timeout:.3f}s", **ctx)


def connect_failed(ctx: ErrorContext) -> ClientConnectionError:
    """The connection was never made, so the request was never sent (safe to retry)."""
    return ClientConnectionError(CONNECT_FAILED, request_sent=False, **ctx)


def closed_in_flight(ctx: ErrorContext) -> ClientClosedError:
    """Our own shutdown ended the send: never the upstream's fault."""
    return ClientClosedError(CLOSED_IN_FLIGHT, **ctx)
