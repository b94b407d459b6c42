"""Transport-neutral looks into a client's connections, for tests that run on both transports.

A test that asks "is every connection back?" or "was the transport closed?" should not
care whether aiohttp's connector or the lean transport's pool holds them; each answer
reads the one the transport has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from yarl import URL

from app.clients import BaseServiceClient
from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.lean_transport import LeanTransport
from app.clients.transport import Request
from app.resilience.pipeline import CallRecord
from settings.config import UPSTREAMS

__all__ = ["connections_in_use", "gateway_on", "on_transport", "seam_request", "transport_closed"]


def gateway_on(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """The gateway's clients (every built-in upstream's, not only the one a test calls) on ``transport``."""
    for name in UPSTREAMS:
        monkeypatch.setenv(f"APP_{name.upper()}__TRANSPORT", transport)


def connections_in_use(transport: Any) -> int:
    """Connections in an exchange right now (0: every one is back in the pool, or closed).

    ``transport`` is a client's ``_transport`` (or one instance's, from a balanced client).
    """
    if isinstance(transport, LeanTransport):
        return transport.pool.busy
    if isinstance(transport, AiohttpTransport):
        session = transport.session
        if session is None or session.connector is None:
            return 0  # never opened, or closed: nothing can be in use
        # aiohttp has no public count: _acquired holds the connections handed out.
        return len(session.connector._acquired)
    raise TypeError(f"not a transport these tests know: {transport!r}")


def transport_closed(transport: Any) -> bool:
    """Whether the transport was closed (``aclose``): its session, or its pool, shut."""
    if isinstance(transport, LeanTransport):
        return transport.pool.closed
    if isinstance(transport, AiohttpTransport):
        session = transport.session
        return session is None or session.closed  # aclose drops (and closes) the session it owned
    raise TypeError(f"not a transport these tests know: {transport!r}")


def on_transport(
    make_client: Callable[..., BaseServiceClient], transport: str
) -> Callable[..., BaseServiceClient]:
    """``make_client`` building on ``transport`` unless the test names one (the suites' fixtures share it)."""

    def build(base_url: str, cls: type[BaseServiceClient] = BaseServiceClient, **overrides: Any) -> Any:
        overrides.setdefault("transport", transport)
        return make_client(base_url, cls, **overrides)

    return build


def seam_request(url: str, method: str = "GET", endpoint: str = "r") -> Request:
    """One attempt's ``Request`` to ``url``, as the client hands a transport (for tests at the seam)."""
    return Request(
        record=CallRecord("seam", method, endpoint, "rid"),
        url=URL(url),
        body=None,
        headers={"Accept": "application/json"},
        params=None,
        forward_deadline=False,
        traced=False,
    )
