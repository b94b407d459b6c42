"""dependency-injector Resources: a session and a client that open and close with the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp

from app.clients.base import BaseServiceClient
from app.clients.config import ClientConfig
from app.clients.session import new_session
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import Clock
from app.resilience.retry import RetryPolicy

__all__ = ["client_resource", "session_resource"]

C = TypeVar("C", bound=BaseServiceClient)


async def session_resource(config: ClientConfig) -> AsyncIterator[aiohttp.ClientSession]:
    """One kept-alive session per upstream, closed when the lifespan ends."""
    session = new_session(config)
    try:
        yield session
    finally:
        await session.close()


async def client_resource(
    client_class: type[C],
    config: ClientConfig,
    *,
    session: aiohttp.ClientSession,
    breaker: CircuitBreakerPolicy,
    bulkhead: Bulkhead,
    retry: RetryPolicy,
    clock: Clock,
    **optional: Any,
) -> AsyncIterator[C]:
    """The upstream's client on the shared session and policies; closed at shutdown.

    ``optional`` carries the container's budget, rate limiter, hedging, adaptive limit
    and observer Singletons (each may be None: that feature is off).
    """
    client = client_class(
        config, session=session, breaker=breaker, bulkhead=bulkhead, retry=retry, clock=clock, **optional
    )
    try:
        yield client
    finally:
        await client.close()
