"""dependency-injector Resources: a session and a client that open and close with the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import aiohttp

from app.clients.base import BaseServiceClient
from app.clients.config import ClientConfig
from app.clients.policies import ClientPolicies
from app.clients.session import new_session
from app.state import SharedState, SharedStateSettings

__all__ = ["client_resource", "session_resource", "shared_state_or_none", "shared_state_resource"]

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
    policies: ClientPolicies,
) -> AsyncIterator[C]:
    """The upstream's client on the shared session and the container's policies; closed at shutdown.

    An upstream with several instances gets a session per instance instead (the client
    opens them), so an instance that leaves the set takes its connections with it. One on
    the lean transport gets none: an injected session would send it back to aiohttp.
    """
    own = config.fleet or config.transport == "lean"
    client = client_class(config, session=None if own else session, policies=policies)
    try:
        yield client
    finally:
        await client.close()


def shared_state_or_none(settings: SharedStateSettings | None) -> SharedState | None:
    """The process's one Redis (not yet started), or None when shared state is off."""
    return None if settings is None else SharedState(settings)


async def shared_state_resource(state: SharedState | None) -> AsyncIterator[SharedState | None]:
    """Start the shared state with the lifespan (Redis down: it starts degraded); stop it at the end."""
    if state is None:
        yield None
        return
    await state.start()
    try:
        yield state
    finally:
        await state.aclose()
