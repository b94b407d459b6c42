"""The aiohttp session an AiohttpTransport sends through: kept alive, sized to the bulkhead."""

from __future__ import annotations

import weakref

import aiohttp

from app.clients.config import ClientConfig

__all__ = ["follow_bulkhead", "is_plain", "new_session", "user_agent"]

#: The sessions ``new_session`` made (weakly: a closed one may go).
_MADE_HERE: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()


def user_agent(service_name: str) -> str:
    """The User-Agent every transport sends: one string, so upstream logs see one client."""
    return f"resilient-clients/0.1 ({service_name})"


def new_session(config: ClientConfig) -> aiohttp.ClientSession:
    """A session for one upstream; call from inside the event loop that will use it."""
    connector = aiohttp.TCPConnector(
        # The bulkhead is the real concurrency limit; the pool must not be a hidden second one.
        limit=config.bulkhead_max_concurrent,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=30,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        # Timeouts are the pipeline's (attempt timeout within the deadline), not aiohttp's.
        timeout=aiohttp.ClientTimeout(total=None),
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # service calls are stateless; no cookie leaks
        headers={"User-Agent": user_agent(config.service_name)},
    )
    # aiohttp quietly resends an idempotent request once when the server disconnects.
    # Retries are the pipeline's alone: a hidden one would double the load on a sick
    # upstream and falsify attempt counts, retry budgets and the breaker's tally.
    # There is no public switch; tests/integration/test_error_table.py pins this.
    session._retry_connection = False
    _MADE_HERE.add(session)
    return session


def is_plain(session: aiohttp.ClientSession) -> bool:
    """True for a session ``new_session`` made: no trace hooks, and aiohttp's own response class.

    Its answers need none of ``ClientResponse.read()``'s extras (the body trace hook, a
    ``response_class`` of someone else's): the transport may take a body that came whole
    as it is, and skip the release of a connection aiohttp already gave back.
    """
    return session in _MADE_HERE


def follow_bulkhead(session: aiohttp.ClientSession, old: ClientConfig, new: ClientConfig) -> None:
    """Resize the session's pool with the bulkhead, when ``new_session`` sized it to the old one.

    A pool sized otherwise (a session someone else made) is theirs, and stays as it is.
    """
    connector = session.connector
    if connector is None or connector.limit != old.bulkhead_max_concurrent:
        return
    # aiohttp has no setter for the pool's size; it reads ``_limit`` at every acquire, so
    # the new size holds from the next connection (tests/integration/test_live_reconfigure.py
    # sees calls beyond the old size reach the upstream together).
    connector._limit = new.bulkhead_max_concurrent
