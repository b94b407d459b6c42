"""LeanTransport, opt-in: plain HTTP/1.1 over pooled asyncio.Protocol connections; the factory picking it.

aiohttp's client spends most of a small call in layers a keep-alive call inside a
cluster does not need (the request and response objects, the stream reader, the
connector's bookkeeping). This transport writes the request head itself and parses the
answer with llhttp (through httptools, the parser aiohttp's own C parser wraps too), so
it accepts and refuses exactly the answers aiohttp does, and its answers and errors are
the same: the same ``answer``/``unreadable`` mapping, the same bounded ``BodyDecoder``,
the same ``RedirectGuard``. What it does not do (TLS, an injected session) stays with
:class:`~app.clients.aiohttp_transport.AiohttpTransport`: see :func:`default_transport`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.config import ClientConfig
from app.clients.lean import Broken, Connection, Pool, request_head
from app.clients.lean.connection import TIMEOUT
from app.clients.lean.pool import PoolClosedError
from app.clients.response import answer, unreadable
from app.clients.session import user_agent
from app.clients.timer_wheel import TimerWheel
from app.clients.transport import Request, Transport
from app.clients.urls import MAX_REDIRECTS, REDIRECT_STATUSES, RedirectGuard
from app.clients.wire_errors import closed_in_flight, connect_failed, timed_out
from app.errors import (
    ClientClosedError,
    ClientConnectionError,
    ClientResponseError,
    ErrorContext,
)

__all__ = ["LeanTransport", "default_transport"]


class _DefaultTransport:
    """The transport a config asks for (an object, not a function: a class attribute must not bind it)."""

    __slots__ = ()

    def __call__(self, config: ClientConfig, *, session: aiohttp.ClientSession | None = None) -> Transport:
        """Lean when it can serve the upstream, else aiohttp.

        Lean needs ``transport="lean"``, a plain ``http://`` base URL and no injected
        session (an injected session is the caller's choice of HTTP client). Anything
        else (TLS, the default) goes through aiohttp.
        """
        if config.transport == "lean" and session is None and config.base_url.startswith("http://"):
            return LeanTransport(config)
        return AiohttpTransport(config, session=session)

    def __repr__(self) -> str:
        return "default_transport"


#: ``BaseServiceClient.transport_factory``: LeanTransport when asked for and possible, else aiohttp.
default_transport = _DefaultTransport()


class LeanTransport:
    """Sends through its own pool of HTTP/1.1 keep-alive connections to one ``http://`` upstream.

    The pool holds at most ``bulkhead_max_concurrent`` connections, as aiohttp's
    connector does (the bulkhead is the real limit). The attempt's ``timeout`` bounds it
    whole (waiting for a connection, connecting, the answer and its body, redirects). A
    connection is reused only after a whole answer that lets it live; an attempt cut
    short (timeout, cancellation, a refused body) drops its connection.
    """

    __slots__ = (
        "_cap", "_closed", "_config", "_follow", "_limit", "_pool", "_redirects", "_timers", "_user_agent",
    )  # fmt: skip

    def __init__(self, config: ClientConfig) -> None:
        base = URL(config.base_url)
        if base.scheme != "http" or base.host is None or base.port is None:
            raise ValueError("LeanTransport serves plain http:// upstreams only")
        self._config = config
        self._pool = Pool(base.host, base.port, config.bulkhead_max_concurrent)
        self._closed = False
        self._redirects = RedirectGuard(config.base_url)
        self._user_agent = user_agent(config.service_name)
        self._limit = config.max_response_bytes
        self._cap = config.retry_max_delay
        self._follow = config.follow_redirects
        self._timers: TimerWheel | None = None  # the wheel of the loop attempts run on

    def reconfigure(self, config: ClientConfig) -> None:
        """Attempts from now on take ``config``'s limits, pool size and redirect switch (not its base URL)."""
        self._config = config
        self._limit = config.max_response_bytes
        self._cap = config.retry_max_delay
        self._follow = config.follow_redirects
        self._pool.resize(config.bulkhead_max_concurrent)

    def __repr__(self) -> str:
        return f"LeanTransport(base_url={self._config.base_url!r})"

    @property
    def pool(self) -> Pool:
        """The connection pool (tests look into it)."""
        return self._pool

    async def send(self, request: Request, headers: Mapping[str, str], timeout: float) -> Any:
        """One attempt (see :class:`~app.clients.transport.Transport`)."""
        # request.context is built where an error needs it: a dict held by this frame
        # would live as long as the attempt (~0.2 KB a call in flight).
        record = request.record
        if self._closed:
            raise ClientClosedError(**request.context)
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        method, url, body = request.method, request.url, request.body
        # Read once: a reload (reconfigure) mid-call must not change how this call's answers
        # are read halfway (a redirect's head taken with follow on, then kept with it off).
        pool, limit, follow = self._pool, self._limit, self._follow
        for _ in range(MAX_REDIRECTS + 1):
            conn = await self._connection(loop, ends, timeout, request)
            try:
                waiter = conn.start(loop, head_only=method == "HEAD", limit=limit, follow=follow)
                transport = conn.transport
                assert transport is not None  # noqa: S101 - acquire hands out connected ones only
                # On the transport's timer wheel: a timer of the loop's own costs more (see TimerWheel).
                timers = self._timers
                if timers is None or timers.loop is not loop:  # the first attempt, or a new loop
                    timers = self._timers = TimerWheel(loop)
                timer = timers.call_at(ends, conn.end, TIMEOUT)
                try:
                    transport.write(request_head(method, url, headers, body, self._user_agent))
                    if body:
                        transport.write(body)
                    outcome = await waiter
                finally:
                    timer.cancel()
            except BaseException:
                conn.abort()  # cancelled mid-answer: the rest of it would poison the next exchange
                pool.release(conn)
                raise
            status, answer_headers = conn.status, conn.headers
            if status:
                record.status = status
            if outcome is not None or answer_headers is None:
                pool.release(conn)
                self._failed(outcome, status, answer_headers, timeout, method, url, request.context)
            raw = conn.body()
            pool.release(conn)
            if status in REDIRECT_STATUSES and follow:
                location = answer_headers.get("Location")
                method, url, body = self._redirects.next_hop(
                    status, location, method=method, url=url, body=body, context=request.context
                )
                continue
            return answer(status, answer_headers, raw, self._cap, record, request.raw)
        raise ClientResponseError("too many redirects", status=record.status, **request.context)

    async def _connection(
        self, loop: asyncio.AbstractEventLoop, ends: float, timeout: float, request: Request
    ) -> Connection:
        try:
            return await self._pool.acquire(loop, ends)
        except PoolClosedError:
            raise closed_in_flight(request.context) from None
        except TimeoutError as exc:
            raise timed_out(timeout, request.context) from exc
        except OSError as exc:
            # The connection was never made, so the request was never sent. The cause is
            # the one aiohttp gives (callers and tests look at it), naming host and port.
            pool = self._pool
            key = ConnectionKey(pool.host, pool.port, False, True, None, None, None)
            cls = (
                aiohttp.ClientConnectorDNSError
                if isinstance(exc, socket.gaierror)
                else aiohttp.ClientConnectorError
            )
            cause = cls(key, exc)
            raise connect_failed(request.context) from cause

    def _failed(  # noqa: PLR0917 - the error path of one exchange: all it knows, positionally
        self,
        outcome: Broken | None,
        status: int,
        headers: CIMultiDictProxy[str] | None,
        timeout: float,
        method: str,
        url: URL,
        ctx: ErrorContext,
    ) -> NoReturn:
        """Raise the typed error for an exchange that ended without a whole answer (DESIGN §4)."""
        kind = outcome.kind if outcome is not None else "broken"
        cause = outcome.cause if outcome is not None else None
        if kind == "broken" and self._closed:
            kind = "closed"  # our own aclose() cut it (a connection handed over as it closed)
        if kind == "unreadable" and headers is not None:
            unreadable(cause, status, headers, limit=self._limit, max_retry_after=self._cap, context=ctx)  # type: ignore[arg-type]
        # Each error raised as made, never held by a local: this frame is in its traceback,
        # and a frame holding the error raised through it is a reference cycle for the gc.
        if kind == "timeout":
            raise timed_out(timeout, ctx) from TimeoutError()
        if kind == "closed":
            raise closed_in_flight(ctx)
        if kind == "invalid":
            # What aiohttp raises when its parser refuses the answer, naming the request.
            info = aiohttp.RequestInfo(url, method, CIMultiDictProxy(CIMultiDict()), url)
            cause = aiohttp.ClientResponseError(info, (), status=400, message=str(cause))
        raise ClientConnectionError(f"connection broke: {type(cause).__name__}", **ctx) from cause

    async def aclose(self) -> None:
        """Close every connection: a send in flight, or any later one, ends in ``ClientClosedError``."""
        self._closed = True
        await self._pool.aclose()
