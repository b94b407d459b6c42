"""One call's attempts through its client's transport, the observer told; a failure under close() is ours."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from app.auth import Credentials
from app.clients.transport import DEADLINE_HEADER, Request, Transport
from app.clients.wire_errors import closed_in_flight
from app.errors import ClientClosedError, ClientConnectionError, ClientError, ClientTimeoutError
from app.observability.call_log import CALLS_LOGGER
from app.observability.context import attempt_span_var
from app.resilience.pipeline import Attempt, raise_settled

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from app.clients.base import BaseServiceClient

__all__ = ["AuthorizedAttempt", "TransportAttempt"]

_calls_logger = logging.getLogger(CALLS_LOGGER)
_DEBUG = logging.DEBUG


class TransportAttempt(Attempt[Any]):
    """Each attempt of one call: the transport's send, with the observer's hooks around it.

    Bare (see :class:`~app.resilience.pipeline.Attempt`) unless the call is traced: each
    attempt's span opens and closes around its send. A deadline to forward needs no
    wrapper, only a copy of the headers per attempt. One object per call, where a
    ``partial`` of a bound method was three.
    """

    __slots__ = ("bare", "client", "out", "transport")

    def __init__(self, client: BaseServiceClient, transport: Transport, out: Request) -> None:
        self.client = client
        self.transport = transport
        self.out = out
        self.bare = out.record.span is None

    def send(self, timeout: float) -> Any:
        """The transport's send (of this attempt's own headers when it has a deadline to forward)."""
        out = self.out
        # The call's own headers unless they need a copy (_headers), checked here: a frame
        # fewer for the common attempt.
        return self.transport.send(out, self._headers(timeout) if out.fresh_headers else out.headers, timeout)

    def _headers(self, timeout: float) -> CIMultiDict[str]:
        out = self.out
        if not out.fresh_headers:
            return out.headers
        headers = out.headers.copy()  # this attempt's own: hedged attempts run side by side
        if out.forward_deadline:
            headers[DEADLINE_HEADER] = str(int(timeout * 1000))
        return headers

    def answered(self) -> None:
        """A bare send was answered: the observer told, when it has something to do with it.

        A bare attempt has no span: the observer's only work is the DEBUG line, so its
        level is asked here, and the common attempt pays no call of the observer's.
        """
        # isEnabledFor(DEBUG) as it answers itself: logging's per-level cache first (it
        # clears it on every level change), the call only when the level is not in it.
        enabled = _calls_logger._cache.get(_DEBUG)  # type: ignore[attr-defined]
        if enabled is None:
            enabled = _calls_logger.isEnabledFor(_DEBUG)
        if enabled and not _calls_logger.disabled:
            out = self.out
            self.client.observer.attempt_ended(out.record, None, None, out.params)

    def failed(self, error: BaseException) -> BaseException:
        """A bare send raised ``error``: the observer told, and the error to raise."""
        return self._failed(error, None)

    async def __call__(self, timeout: float) -> Any:
        """The whole attempt: headers of its own when it needs them, the send, the observer told."""
        out, observer = self.out, self.client.observer
        headers = self._headers(timeout)
        span = observer.attempt_started(out.record, headers)  # a traced call's: its context goes in
        if span is not None:
            attempt_span_var.set(span)  # for the instance's address, once one is picked
        try:
            result = await self.transport.send(out, headers, timeout)
        except BaseException as exc:
            raise_settled(self._failed(exc, span), exc)
        observer.attempt_ended(out.record, span, None, out.params)
        return result

    def _failed(self, error: BaseException, span: Span | None) -> BaseException:
        # A typed answer or a failure below HTTP, or a cancellation: a hedge's loser, a
        # caller that gave up, or close(). Even for close() the cancellation goes on up to
        # request(), which turns it into ClientClosedError (the policies saw only a
        # cancellation, which none of them counts).
        if isinstance(error, ClientConnectionError | ClientTimeoutError):  # below HTTP: maybe our close
            error = self._closing(error)
        out = self.out
        self.client.observer.attempt_ended(out.record, span, error, out.params)
        return error

    def _closing(self, error: ClientConnectionError | ClientTimeoutError) -> ClientError:
        """A failure below HTTP while the client closes is ``ClientClosedError``: ours, not the upstream's."""
        client = self.client
        if isinstance(error, ClientClosedError):  # the transport's own connections were closed
            client._inflight.take_abort()
            return error
        if not client._closed:
            return error
        client._inflight.take_abort()
        return closed_in_flight(self.out.context)


class AuthorizedAttempt(TransportAttempt):
    """An attempt that carries the token current when it is sent (a refreshed one goes out at once)."""

    __slots__ = ("credentials",)

    def __init__(
        self, client: BaseServiceClient, transport: Transport, out: Request, credentials: Credentials
    ) -> None:
        super().__init__(client, transport, out)
        self.credentials = credentials

    def send(self, timeout: float) -> Any:
        """The send, with the token current now."""
        self._current()
        return super().send(timeout)

    def __call__(self, timeout: float) -> Any:
        """The whole attempt, with the token current now."""
        self._current()
        return super().__call__(timeout)

    def _current(self) -> None:
        value = self.credentials.current()
        if value is not None:
            self.out.headers[self.credentials.header] = value
