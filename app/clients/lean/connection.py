"""One kept-alive HTTP/1.1 connection: an asyncio.Protocol whose answers llhttp (httptools) parses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from app.clients.decoding import BodyDecoder, BodyDecodingError, BodyTooLargeError, is_identity
from app.clients.urls import REDIRECT_STATUSES

__all__ = ["Broken", "CLOSED", "Connection", "Outcome", "TIMEOUT"]

# aiohttp's client parser limits: a header line, a field, and how many fields. Past
# them aiohttp refuses the answer, and so does this transport (same error, same rows).
_MAX_LINE = 8190
_MAX_FIELD = 8190
_MAX_HEADERS = 128
#: Bytes of a head read since its last whole line (status or header field) before the
#: answer is refused: llhttp hands a field over only once it ends, so a line that never
#: ends would otherwise be buffered until the attempt's timeout.
_MAX_PENDING = _MAX_LINE + _MAX_FIELD + 4
#: A lost connection's parser: bound to no callbacks, never fed.
_INERT_PARSER = httptools.HttpResponseParser(object())


class Broken:
    """Why an exchange ended without a whole answer; the transport turns it into a typed error.

    ``kind``: ``timeout``, ``closed`` (our own aclose), ``broken`` (below HTTP: ``cause`` is
    the aiohttp exception aiohttp would have raised, so errors read the same whichever
    transport ran), ``invalid`` (not HTTP as aiohttp's parser takes it: ``cause`` is a
    ``ValueError`` with llhttp's reason) or ``unreadable`` (the body: ``cause`` is a
    ``BodyTooLargeError`` or a ``BodyDecodingError``, and status and headers are known).
    """

    __slots__ = ("cause", "kind")

    def __init__(self, kind: str, cause: BaseException | None = None) -> None:
        self.kind = kind
        self.cause = cause


#: What an exchange's waiter ends with: None for a whole answer, else why not.
Outcome = Broken | None
TIMEOUT: Final = Broken("timeout")
CLOSED: Final = Broken("closed")


def _not_http(reason: str) -> Broken:
    # The transport turns it into what aiohttp raises for an answer its (the same llhttp)
    # parser refuses, a ClientResponseError naming the request.
    return Broken("invalid", ValueError(reason))


class Connection(asyncio.Protocol):
    """A TCP connection to the upstream, one exchange at a time (no pipelining).

    ``start`` arms it for the next answer and returns the waiter the sender awaits; the
    protocol callbacks fill ``status``, ``headers`` and the body (decoded through a
    bounded :class:`~app.clients.decoding.BodyDecoder` as it arrives, refused past
    ``limit``), then set the waiter's result: None, or a :class:`Broken`. ``keep`` says
    whether the connection may serve another exchange. ``on_lost`` tells the pool.
    """

    __slots__ = (
        "_body", "_decoder", "_eof_body", "_failure", "_fields", "_follow", "_head_only", "_interim",
        "_limit", "_on_lost", "_parser", "_pending", "_reparse", "_size", "_skipping", "closed", "headers",
        "idle_since", "keep", "status", "transport", "waiter",
    )  # fmt: skip

    def __init__(self, on_lost: Callable[[Connection], None]) -> None:
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._reparse = False
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Outcome] | None = None
        self.closed = False
        self.keep = False
        self.idle_since = 0.0
        self._reset(head_only=False, limit=0, follow=False)

    def _reset(self, *, head_only: bool, limit: int, follow: bool) -> None:
        self.status = 0
        self.headers: CIMultiDictProxy[str] | None = None
        self._fields: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._decoder: BodyDecoder | None = None
        self._head_only = head_only
        #: A redirect will be followed: its answer ends at its head, its body unread.
        self._follow = follow
        #: Such a head was handed over, and its body is still coming (skipped).
        self._skipping = False
        self._interim = False
        self._eof_body = False
        self._failure: Broken | None = None
        self._pending = 0

    # -- the sender's side ---------------------------------------------------------------

    def start(
        self, loop: asyncio.AbstractEventLoop, *, head_only: bool, limit: int, follow: bool = False
    ) -> asyncio.Future[Outcome]:
        """Arm the connection for the next answer; the waiter ends with its ``Outcome``.

        ``follow``: a redirect (301, 302, 303, 307, 308) ends at its head, as aiohttp
        follows one: its body is never read, so one that is slow, or never ends, does not
        hold the call up. The connection is kept only when the body was whole by the time
        the sender picks the answer up (in the same read, as an empty one is).
        """
        if self._reparse:
            # After a HEAD the parser thinks a body follows (it cannot know the method).
            self._parser = httptools.HttpResponseParser(self)
            self._reparse = False
        self._reset(head_only=head_only, limit=limit, follow=follow)
        self.keep = False
        waiter = self.waiter = loop.create_future()
        return waiter

    def body(self) -> bytes:
        """The whole (decoded) body of the answer just read."""
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    def end(self, outcome: Outcome) -> None:
        """End the exchange now (a timeout, our close): the connection is dropped, never reused."""
        self.keep = False
        self._wake(outcome)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once (mid-answer it cannot be reused)."""
        self.keep = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _wake(self, outcome: Outcome) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write requests on."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; a refused answer ends the exchange and the connection."""
        if self.waiter is None:
            # Bytes nobody asked for: the peer does not speak our HTTP; never reuse it.
            self.abort()
            return
        if self.headers is None:
            self._pending += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A 101 (or a CONNECT answer) is a final answer here: what follows is not HTTP.
            self.keep = False
            if self.waiter is not None:
                self._complete()
            self.abort()
        except httptools.HttpParserError as exc:
            failure = self._failure or _not_http(str(exc))
            self.keep = False
            self._wake(failure)
            self.abort()
            return
        if self.headers is None and self._pending > _MAX_PENDING:
            # As aiohttp refuses a line past its limit (and at about the same size).
            self.keep = False
            self._wake(_not_http(f"Got more than {_MAX_FIELD} bytes when reading: header"))
            self.abort()

    def eof_received(self) -> bool:
        """The peer finished sending: let the transport close; ``connection_lost`` decides."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: an answer framed by the close ends here, any other is broken."""
        self.closed = True
        self.keep = False
        if self.waiter is not None:
            if self.headers is not None and self._eof_body and self._failure is None:
                self._complete()
            elif self.headers is None:
                self._wake(Broken("broken", aiohttp.ServerDisconnectedError()))
            else:
                self._wake(Broken("broken", aiohttp.ClientPayloadError("Response payload is not completed")))
        # The parser holds this connection's callbacks, and the connection holds it: a cycle
        # the gc would have to find for every connection dropped. Nothing is fed once lost
        # (data_received refuses bytes nobody waits for), so an inert parser takes its place.
        self._parser = _INERT_PARSER
        self._on_lost(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        """An answer starts: one that nobody waits for (bytes after the last) leaves the connection unfit."""
        if self.waiter is None:
            # Its parser is now inside that answer: the next exchange would read it as its
            # own, so the connection is dropped, not given back for reuse.
            self.keep = False

    def on_status(self, status: bytes) -> None:
        """Refuse a reason phrase aiohttp would refuse as too long."""
        self._pending = 0
        if len(status) > _MAX_LINE:
            raise self._refuse(f"Got more than {_MAX_LINE} bytes when reading: status line")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header field, within aiohttp's limits."""
        self._pending = 0
        fields = self._fields
        if len(name) > _MAX_FIELD or len(value) > _MAX_FIELD or len(fields) >= _MAX_HEADERS:
            raise self._refuse(f"Got more than {_MAX_FIELD} bytes when reading: header")
        # As aiohttp decodes them: undecodable bytes kept as surrogates (header_text cleans them).
        fields.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        """Status and headers are in: skip a 1xx, size up and prepare the body."""
        if self.waiter is None:
            # A second answer in the same read as the first, which nobody asked for: it must
            # not overwrite the first's status and headers, and the connection is not reused.
            self.keep = False
            raise self._refuse("an answer nobody asked for")
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            self._fields = []
            return
        self.status = status
        headers = self.headers = CIMultiDictProxy(CIMultiDict(self._fields))
        if self._head_only:
            self._reparse = True
            self.keep = self._parser.should_keep_alive()
            self._complete()
            return
        if self._follow and status in REDIRECT_STATUSES:
            # Not kept unless the body ends before the sender releases the connection
            # (on_message_complete, from this same read).
            self._skipping = True
            self._wake(None)
            return
        length = headers.get("Content-Length")
        if length is None:
            te = headers.get("Transfer-Encoding")
            # No length and not chunked: the body runs until the peer closes.
            self._eof_body = te is None or te.rsplit(",", 1)[-1].strip().lower() != "chunked"
        elif int(length) > self._limit and status not in (204, 304):  # llhttp checked the digits
            # A 304's Content-Length may be the full representation's; it has no body at all.
            raise self._unreadable(BodyTooLargeError())
        coding = headers.get("Content-Encoding")
        if coding is not None and not is_identity(coding):
            try:
                self._decoder = BodyDecoder(coding, self._limit)
            except BodyDecodingError as exc:
                raise self._unreadable(exc) from None

    def on_body(self, data: bytes) -> None:
        """A piece of the body: decoded in bounded steps, or kept, refused past the limit."""
        if self.waiter is None:
            return  # the exchange already ended (a HEAD's answer, or a refusal)
        decoder = self._decoder
        if decoder is not None:
            try:
                decoder.feed(data)
            except (BodyTooLargeError, BodyDecodingError) as exc:
                raise self._unreadable(exc) from None
            return
        self._size += len(data)
        if self._size > self._limit:
            self._body = []
            raise self._unreadable(BodyTooLargeError())
        self._body.append(data)

    def on_message_complete(self) -> None:
        """The answer is whole: hand it over (after a 1xx, wait for the next one)."""
        if self._interim:
            self._interim = False
            return
        if self.waiter is None:
            if self._skipping:  # a followed redirect's body, whole while it is still ours
                self._skipping = False
                self.keep = self._parser.should_keep_alive()
            return
        self.keep = self._parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        decoder = self._decoder
        if decoder is not None:
            self._decoder = None
            try:
                self._body = [decoder.finish()]
            except BodyDecodingError as exc:
                self.keep = False
                self._wake(Broken("unreadable", exc))
                return
        self._wake(None)

    def _unreadable(self, exc: BodyTooLargeError | BodyDecodingError) -> Exception:
        # Raised inside a callback to stop the parser; data_received then reports the failure.
        self._body = []
        self._failure = Broken("unreadable", exc)
        return exc

    def _refuse(self, reason: str) -> Exception:
        failure = self._failure = _not_http(reason)
        return failure.cause  # type: ignore[return-value]
