"""AiohttpTransport, the default: attempts through an aiohttp session, answers read within limits."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import hdrs
from aiohttp.payload import TOO_LARGE_BYTES_BODY

from app.clients.config import ClientConfig
from app.clients.decoding import BodyDecoder, BodyDecodingError, BodyTooLargeError, is_identity
from app.clients.response import answer, unreadable
from app.clients.session import follow_bulkhead, is_plain, new_session
from app.clients.timer_wheel import TimerWheel
from app.clients.transport import Request
from app.clients.urls import MAX_REDIRECTS, REDIRECT_STATUSES, RedirectGuard
from app.clients.wire_errors import closed_in_flight, connect_failed, timed_out
from app.errors import (
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ErrorContext,
)

__all__ = ["AiohttpTransport", "read_body"]

_NO_BODY = frozenset({204, 304})
#: No timeout of aiohttp's: an attempt's is on the transport's timer wheel.
_NO_TIMEOUT = aiohttp.ClientTimeout()
_CHUNK = 64 * 1024


async def read_body(resp: aiohttp.ClientResponse, limit: int, plain: bool) -> bytes:
    """The decoded body, or ``BodyTooLargeError`` as soon as it passes ``limit`` bytes.

    The limit is on the body after its Content-Encoding is undone (the sessions leave
    decoding to us); ``BodyDecodingError`` when that coding is unknown or the stream corrupt.
    ``plain``: the response's session has no per-body hooks (see ``is_plain``), so a small
    body that came whole may be taken without ``ClientResponse.read()``.
    """
    if resp.status in _NO_BODY or resp.method == hdrs.METH_HEAD:
        # No body, whatever Content-Length says: a 304's is the full representation's
        # (RFC 9110 §8.6), which may well be past ``limit``.
        return b""
    coding = resp.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and not is_identity(coding):
        return await _read_encoded(resp, coding, limit)
    try:
        length = resp.content_length
    except ValueError:  # aiohttp's parser vets it; never trust that twice
        length = None
    if length is not None:
        if length > limit:
            raise BodyTooLargeError
        if length <= _CHUNK:
            # The common small reply: one read. aiohttp stops at Content-Length.
            if plain:
                content = resp.content
                if content.is_eof():
                    # It came whole with its head (one packet, as most do): taken as it is,
                    # with no read to await (15k instructions a call measured: read()'s
                    # coroutines). Not on a session of someone else's: read() is where
                    # aiohttp fires its body trace hook, and a response class may extend it.
                    return content.read_nowait()
            return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            # Dropped now: the error's traceback keeps this frame alive as long as the error.
            chunks.clear()
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_encoded(resp: aiohttp.ClientResponse, coding: str, limit: int) -> bytes:
    decoder = BodyDecoder(coding, limit)
    async for chunk in resp.content.iter_chunked(_CHUNK):
        decoder.feed(chunk)
    return decoder.finish()


class AiohttpTransport:
    """Sends through one kept-alive aiohttp session: its own (opened on first use) or an injected one.

    A session serves the event loop it was opened on, so a client keeps one transport per
    loop it runs on (the sync twins have their own). Redirects are followed, with
    ``follow_redirects``, only under the base URL. Bodies are decoded here in bounded
    steps, never by aiohttp, and refused past ``max_response_bytes``.
    """

    __slots__ = (
        "_cap", "_closed", "_config", "_follow", "_limit", "_owns", "_plain", "_redirects", "_session",
        "_timers",
    )  # fmt: skip

    def __init__(self, config: ClientConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self._config = config
        self._session = session
        self._owns = session is None  # an injected session belongs to whoever injected it
        # Ours (new_session's, as the container's are), or one of someone else's that may
        # hook into every body and response: then aiohttp reads and releases every answer.
        self._plain = session is None or is_plain(session)
        self._closed = False
        self._limit = config.max_response_bytes
        self._cap = config.retry_max_delay
        self._follow = config.follow_redirects
        self._redirects = RedirectGuard(config.base_url)
        self._timers: TimerWheel | None = None  # the wheel of the loop attempts run on

    def reconfigure(self, config: ClientConfig) -> None:
        """Attempts from now on take ``config``'s timeout, limits and redirect switch.

        The pool follows the bulkhead's size (see ``follow_bulkhead``). The base URL stays
        the one the transport was made for, and redirects stay under it.
        """
        if self._session is not None:
            follow_bulkhead(self._session, self._config, config)
        self._config = config
        self._limit = config.max_response_bytes
        self._cap = config.retry_max_delay
        self._follow = config.follow_redirects

    def __repr__(self) -> str:
        return f"AiohttpTransport(base_url={self._config.base_url!r}, owns_session={self._owns})"

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session attempts go through, once there is one (None after ``aclose`` of its own)."""
        return self._session

    async def send(  # noqa: PLR0912 - one frame per attempt: its steps inline, none in a helper
        self, request: Request, headers: Mapping[str, str], timeout: float
    ) -> Any:
        """One attempt (see :class:`~app.clients.transport.Transport`)."""
        session = self._session
        if session is None:
            session = self._open(request.context)
        # request.context is built where an error needs it: a dict held by this frame
        # would live as long as the attempt (~0.2 KB a call in flight).
        record = request.record
        method, url, body = request.method, request.url, request.body
        follow = self._follow  # once: a reload mid-call does not change how this one is read
        # The attempt's timeout (connect, send, headers, body, every redirect) is an entry on
        # this transport's timer wheel, not aiohttp's own timeout (a loop timer an attempt).
        # When it fires, the wheel cancels this task, as aiohttp's timeout would, and the
        # cancellation is turned into the timeout below, as asyncio.timeout() does.
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a coroutine runs in a task
        timers, loop = self._timers, task.get_loop()
        if timers is None or timers.loop is not loop:  # the first attempt, or a new loop
            timers = self._timers = TimerWheel(loop)
        expiry = timers.call_later(timeout, task.cancel)
        cancelling = task.cancelling()
        try:
            for _ in range(MAX_REDIRECTS + 1):
                # Awaited, not entered: `async with` holds a wrapper coroutine of aiohttp's while
                # the attempt waits for its answer (~0.2 KB a call in flight). The finally does
                # what its exit does: release the connection, and wait for the body's writer.
                resp = await session.request(
                    method,
                    url,  # the query is already in it: encoded once per call, not per attempt
                    # Past 1 MiB, aiohttp wants a stream (bytes would be written at once: a
                    # ResourceWarning each time); a stream of its own for every attempt.
                    data=body if body is None or len(body) <= TOO_LARGE_BYTES_BODY else io.BytesIO(body),
                    headers=headers,
                    allow_redirects=False,
                    # Bodies are decoded by read_body, in bounded steps: aiohttp's decoder
                    # would inflate a whole network read at once (a bomb's first 64 KiB).
                    auto_decompress=False,
                    timeout=_NO_TIMEOUT,  # the wheel's, above; an injected session's too
                )
                read = False
                try:
                    status = resp.status
                    record.status = status
                    if status in REDIRECT_STATUSES and follow:
                        method, url, body = self._redirects.next_hop(
                            status,
                            resp.headers.get(hdrs.LOCATION),
                            method=method,
                            url=url,
                            body=body,
                            context=request.context,
                        )
                        continue
                    try:
                        raw = await read_body(resp, self._limit, self._plain)
                        read = self._plain
                    except (BodyTooLargeError, BodyDecodingError) as exc:
                        resp.close()  # drop the connection rather than drain a body we will not use
                        unreadable(
                            exc,
                            status,
                            resp.headers,
                            limit=self._limit,
                            max_retry_after=self._cap,
                            context=request.context,
                        )
                    return answer(status, resp.headers, raw, self._cap, record, request.raw)
                finally:
                    # An answer read whole gave its connection back at the body's end: aiohttp
                    # releases it then, once the request's writer is done (it holds it until
                    # then). Nothing is left to release or wait for: both skipped, 16k
                    # instructions a call measured (two releases and a coroutine, each
                    # release cleaning up a writer and a connection already gone). ``read``
                    # only on a plain session: another's response class may extend both.
                    if not read or resp.connection is not None:
                        resp.release()
                        await resp.wait_for_close()
            raise ClientResponseError("too many redirects", status=record.status, **request.context)
        except asyncio.CancelledError:
            if expiry.fired:
                expiry.fired = False  # its cancellation taken back here, once (see the finally)
                if task.uncancel() <= cancelling:  # the wheel's cancellation alone
                    raise timed_out(timeout, request.context) from TimeoutError(f"attempt over {timeout}s")
            raise
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            # Closed under the send: by our aclose(), or by the owner of an injected session.
            raise _below_http(exc, timeout, request.context, closed=self._closed or session.closed) from exc
        finally:
            expiry.cancel()
            if expiry.fired:
                # The wheel cancelled the task, and something below swallowed the cancellation
                # (raised another error instead): take the request back all the same, or the
                # caller's task would count a cancellation nobody asked for (asyncio.timeout()
                # would then take its own expiry for one).
                task.uncancel()
            # Its callback and this local hold the task, which holds a failed attempt's error
            # (when the attempt has a task of its own, as a hedged one), whose traceback holds
            # this frame: dropped, or each such failure is a reference cycle for the gc.
            del expiry, task

    def _open(self, ctx: ErrorContext) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError(**ctx)
        # Opened here, inside the running loop, which the session then belongs to.
        session = self._session = new_session(self._config)
        return session

    async def aclose(self) -> None:
        """Close the session this transport opened; an injected one stays open for its owner."""
        self._closed = True
        if self._owns and self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _below_http(exc: BaseException, timeout: float, ctx: ErrorContext, *, closed: bool) -> ClientError:
    """The typed error for what went wrong below HTTP (DESIGN §4).

    ``closed``: the session was closed under this attempt (our ``aclose()``, or the owner
    of an injected session). Then a broken connection is our side's doing, not the
    upstream's: aiohttp reports it as ``ServerDisconnectedError`` (the connector closed the
    socket under the read) or as "Session is closed" (a ``RuntimeError``), and the seam
    promises ``ClientClosedError`` for both, as LeanTransport raises.
    """
    if isinstance(exc, RuntimeError):
        if not closed:
            try:
                raise exc  # a defect of ours, not something the upstream did
            finally:
                del exc  # its traceback holds this frame: no reference cycle through it
        return closed_in_flight(ctx)
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return timed_out(timeout, ctx)
    if closed:
        return closed_in_flight(ctx)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The connection was never made, so the request was never sent.
        return connect_failed(ctx)
    return ClientConnectionError(f"connection broke: {type(exc).__name__}", **ctx)
