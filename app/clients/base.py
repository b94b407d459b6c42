"""BaseServiceClient: one upstream, one session, every call through the resilience pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypedDict, TypeVar, Unpack, cast

import aiohttp
import orjson
from yarl import URL

from app.clients.config import ClientConfig
from app.clients.decoding import ACCEPT_ENCODING
from app.clients.fallback import NO_FALLBACK, falls_back, mark_degraded, resolve
from app.clients.policies import ClientPolicies
from app.clients.response import (
    BodyDecodingError,
    BodyTooLargeError,
    decode_body,
    decode_error,
    header_text,
    read_body,
    status_error,
)
from app.clients.session import new_session
from app.clients.sync import LoopThread, sync_twin
from app.clients.urls import EndpointResolver
from app.errors import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ClientTimeoutError,
    ErrorContext,
    Rejection,
    RequestEncodeError,
)
from app.observability.context import inbound_deadline_var, request_id_var
from app.observability.observer import CallObserver
from app.observability.tracing import (
    end_cancelled,
    end_span,
    start_attempt_span,
    start_call_span,
    tracing,
)
from app.redaction import register_secret
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.retry import IDEMPOTENT_METHODS

__all__ = ["BaseServiceClient", "CallOptions"]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: How long close() waits for the calls it cut short to unwind before it closes the session.
_CLOSE_GRACE = 2.0
# RFC 9110 §5.1: a field name is a token. A value holds no CR, LF, NUL or other control
# character (HTAB aside), and no lone surrogate (no encoding can send one).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def _header_problem(headers: Mapping[str, str] | None, idempotency_key: str | None) -> str | None:
    """Why these per-call headers cannot be sent, or None (configured ones are vetted at load)."""
    items = list(headers.items()) if headers else []
    if idempotency_key is not None:
        items.append(("Idempotency-Key", idempotency_key))
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            return "a header name is not a valid HTTP token"  # the name itself may be garbage
        if not isinstance(value, str):
            return f"header {name!r} has a {type(value).__name__} value, not text"
        if _BAD_VALUE.search(value):
            # aiohttp would refuse CR/LF only once connected (an untyped ValueError), and
            # send NUL and other control characters as they are.
            return f"header {name!r} holds CR, LF, NUL, another control character or a lone surrogate"
    return None


def _query_problem(params: Any) -> str | None:
    """Why ``params`` cannot be sent as a query string, or None.

    yarl refuses the same values with a TypeError or ValueError that names the value
    (which may be a secret), and silently drops lone surrogates; this names the key only.
    """
    if not isinstance(params, Mapping):
        return "params must be a mapping"
    for key, value in params.items():
        if not isinstance(key, str) or (not key.isascii() and _BAD_VALUE.search(key)):
            return "a query parameter name is not valid text"
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                return f"query parameter {key!r} has a {type(item).__name__} value"
            if isinstance(item, float) and not math.isfinite(item):
                return f"query parameter {key!r} is not a finite number"
            if isinstance(item, str) and not item.isascii() and _BAD_VALUE.search(item):
                return f"query parameter {key!r} is not valid text (a lone surrogate)"
    return None


_Draining = tuple[set[asyncio.Task[Any]], asyncio.Future[None]]


class _Outbound:
    """What every attempt of one logical call sends."""

    __slots__ = ("body", "forward_deadline", "headers", "params", "record", "session", "url")

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        url: URL,
        params: dict[str, Any] | None,
        body: bytes | None,
        headers: dict[str, str],
        record: CallRecord,
        forward_deadline: bool,
    ) -> None:
        self.forward_deadline = forward_deadline
        self.session = session
        self.url = url
        self.params = params
        self.body = body
        self.headers = headers
        self.record = record


class CallOptions(TypedDict, total=False):
    """The keyword options of every call (see :meth:`BaseServiceClient.request`)."""

    params: Mapping[str, Any] | None
    json: Any
    headers: Mapping[str, str] | None
    path_params: Mapping[str, Any] | None
    timeout: float | None
    idempotent: bool | None
    idempotency_key: str | None
    fallback: Any


class BaseServiceClient:
    """A typed, resilient HTTP client for one upstream service.

    Every call runs through the pipeline (bulkhead, deadline, retry, breaker, attempt
    timeout) and ends in the decoded body or a ``ClientError`` from DESIGN §4. Policies
    and the session may be injected (the container does); otherwise the client builds
    its own from ``config`` and owns them. Sync twins (``get_sync`` …) run on a private
    event-loop thread with a session of their own, and share the policies.
    """

    def __init__(
        self,
        config: ClientConfig | Mapping[str, Any],
        *,
        session: aiohttp.ClientSession | None = None,
        policies: ClientPolicies | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        cfg = config if isinstance(config, ClientConfig) else ClientConfig.model_validate(config)
        self.config = cfg
        self.service_name = cfg.service_name
        # Injected policies are shared (the container's Singletons); otherwise the client
        # builds its own from the config, on ``clock``.
        if policies is None:
            policies = ClientPolicies.from_config(cfg, clock)
        self.policies = policies
        clock = self.clock = policies.clock
        self.breaker = policies.breaker
        self.bulkhead = policies.bulkhead
        self.retry = policies.retry
        self.budget = policies.budget
        self.rate_limiter = policies.rate_limiter
        self.hedging = policies.hedging
        self.adaptive = policies.adaptive
        self.observer = policies.observer
        self._pipeline = Pipeline(
            bulkhead=self.bulkhead,
            breaker=self.breaker,
            retry=self.retry,
            attempt_timeout=cfg.timeout_seconds,
            clock=clock,
            events=self.observer,
            budget=self.budget,
            rate_limiter=self.rate_limiter,
            hedging=self.hedging,
            adaptive=self.adaptive,
        )
        self._client_timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds, ceil_threshold=math.inf)
        self._resolver = EndpointResolver(cfg.base_url)
        base = URL(cfg.base_url)
        self._origin = base.origin()
        self._path_prefix = base.raw_path  # ends in "/": the config normalises base_url
        self._session = session
        self._owns_session = session is None
        self._sync = LoopThread(cfg.service_name, lambda: ClientClosedError(service_name=self.service_name))
        self._sync_session: aiohttp.ClientSession | None = None
        self._closed = False
        # Calls in flight (the tasks inside request()), on any loop; close() cuts them short.
        self._calls: set[asyncio.Task[Any]] = set()
        # Tasks close() has cancelled whose cancellation is not yet turned into ClientClosedError.
        self._aborting: set[asyncio.Task[Any]] = set()
        # Per loop, while close() waits there: the aborted calls not yet out, and its wake-up.
        self._draining: dict[asyncio.AbstractEventLoop, _Draining] = {}
        # Accept-Encoding: only what decoding.py decodes in bounded steps (aiohttp's own
        # decoding is switched off per request, see _send).
        self._headers: dict[str, str] = {"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
        if cfg.api_key is not None:
            key = cfg.api_key.get_secret_value()
            register_secret(key)
            self._headers[cfg.api_key_header] = key

    def __repr__(self) -> str:
        name, url = type(self).__name__, self.config.base_url
        return f"{name}(service_name={self.service_name!r}, base_url={url!r})"

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_sync()

    async def close(self) -> None:
        """End every call in flight with ``ClientClosedError``, then close what this client opened.

        Async calls and sync twins alike are cut short (nothing is retried, and the breaker
        does not count them), the sync twins' session and loop thread are closed, and so is
        the session the client opened itself (an injected one belongs to its owner). Later
        calls raise ``ClientClosedError``. Calling it again is harmless.
        """
        self._closed = True
        here = asyncio.get_running_loop()
        sync_loop = self._sync.loop
        self._abort_elsewhere(here, sync_loop)
        await self._end_calls_here()
        if sync_loop is not None:
            with contextlib.suppress(Exception):  # a loop closed under us has nothing to close
                await asyncio.wait_for(
                    asyncio.wrap_future(self._sync.submit(self._shutdown_sync_side())), 2 * _CLOSE_GRACE
                )
        self._sync.close()
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def close_sync(self) -> None:
        """End every call in flight with ``ClientClosedError`` and close the sync twins' side.

        For code without an event loop (and ``with client:``). Calls on other threads'
        loops are cut short too; a session the async methods opened is left for
        ``await close()``, which must run on its own loop.
        """
        self._closed = True
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is not None:
            self._abort_here()  # they end on their own; this thread cannot wait for them
        sync_loop = self._sync.loop
        self._abort_elsewhere(here, sync_loop)
        if sync_loop is not None and sync_loop is not here:
            future = self._sync.submit(self._shutdown_sync_side())
            # Bounded: a close never hangs its caller, whatever the sync side is doing.
            with contextlib.suppress(Exception):
                future.result(timeout=2 * _CLOSE_GRACE)
        self._sync.close()

    async def _shutdown_sync_side(self) -> None:
        """On the sync twins' loop: end its calls, then close its session."""
        await self._end_calls_here()
        if self._sync_session is not None:
            session, self._sync_session = self._sync_session, None
            await session.close()

    def _abort_here(self) -> set[asyncio.Task[Any]]:
        """Cancel the calls in flight on the running loop; close() turns each into ClientClosedError."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        tasks = {
            t
            for t in tuple(self._calls)  # tuple(): other loops' threads add and remove too
            if t.get_loop() is loop and t is not me and not t.done() and t not in self._aborting
        }
        for task in tasks:
            self._aborting.add(task)
            task.cancel()
        return tasks

    def _abort_elsewhere(
        self, here: asyncio.AbstractEventLoop | None, sync_loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """Have every other loop with calls in flight cancel them, on its own thread."""
        loops = {t.get_loop() for t in tuple(self._calls)} - {here, sync_loop}
        for loop in loops:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has no calls left
                loop.call_soon_threadsafe(self._abort_here)

    async def _end_calls_here(self) -> None:
        """Abort this loop's calls and wait (bounded) until each has left request()."""
        tasks = self._abort_here()
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._draining[loop] = (tasks, done)
        try:
            await asyncio.wait({done}, timeout=_CLOSE_GRACE)
        finally:
            self._draining.pop(loop, None)

    def _left(self, task: asyncio.Task[Any]) -> None:
        """A call left request() while the client closes: wake close() once all have."""
        # Its cancellation surfaced (and was taken back) or never came: forget it either way.
        self._aborting.discard(task)
        draining = self._draining.get(task.get_loop())
        if draining is not None:
            tasks, done = draining
            tasks.discard(task)
            if not tasks and not done.done():
                done.set_result(None)

    def _take_abort(self) -> bool:
        """True when the current task's cancellation came from close(); it is then taken back."""
        task = asyncio.current_task()
        if task is None or task not in self._aborting:
            return False
        self._aborting.discard(task)
        task.uncancel()
        # Cancelled by its own caller as well: that cancellation stands.
        return task.cancelling() == 0

    def _closed_error(self, method: str, endpoint: str, attempts: int = 0) -> ClientClosedError:
        return ClientClosedError(
            service_name=self.service_name, method=method, endpoint=endpoint, attempts=attempts
        )

    def _run_sync(self, fn: Callable[P, Coroutine[Any, Any, R]], *a: P.args, **kw: P.kwargs) -> R:
        if self._closed:  # before the loop thread: a closed client starts no thread
            raise ClientClosedError(service_name=self.service_name)
        return self._sync.run(fn, *a, **kw)

    def _current_session(self, method: str, endpoint: str) -> aiohttp.ClientSession:
        if self._closed:
            raise self._closed_error(method, endpoint)
        loop = asyncio.get_running_loop()
        if loop is self._sync.loop:
            if self._sync_session is None:
                self._sync_session = new_session(self.config)
            return self._sync_session
        if self._session is None:
            self._session = new_session(self.config)
        return self._session

    # -- the four verbs and their sync twins -----------------------------------------

    async def get(self, endpoint: str, **options: Unpack[CallOptions]) -> Any:
        """GET ``endpoint``; retried by default. Options as for :meth:`request`."""
        return await self.request("GET", endpoint, **options)

    async def post(self, endpoint: str, **options: Unpack[CallOptions]) -> Any:
        """POST ``endpoint``; retried only with ``idempotent=True`` or an ``idempotency_key``."""
        return await self.request("POST", endpoint, **options)

    async def put(self, endpoint: str, **options: Unpack[CallOptions]) -> Any:
        """PUT ``endpoint``; retried by default."""
        return await self.request("PUT", endpoint, **options)

    async def delete(self, endpoint: str, **options: Unpack[CallOptions]) -> Any:
        """DELETE ``endpoint``; retried by default."""
        return await self.request("DELETE", endpoint, **options)

    get_sync = sync_twin(get)
    post_sync = sync_twin(post)
    put_sync = sync_twin(put)
    delete_sync = sync_twin(delete)

    # -- one logical call ------------------------------------------------------------

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        path_params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        idempotent: bool | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> Any:
        """Send one logical call through the pipeline and return the decoded body.

        ``timeout`` is the deadline of the whole call (retries included); without it,
        ``total_timeout_seconds`` applies, and without that there is none. An inbound
        deadline (``inbound_deadline_var``) shortens it further. ``fallback`` (a value,
        or a function of the error) answers an unavailable or timed-out call instead of
        raising; such a result is reported to ``collect_degraded()``.
        """
        method = method.upper()
        if self._closed:
            raise self._closed_error(method, endpoint)
        url = self._resolver.resolve(endpoint, path_params)  # ValueError before anything is sent
        if timeout is not None and not timeout > 0:  # "not >" also refuses nan
            raise ValueError("timeout must be > 0")
        # Fast refusals: an open breaker or a full bulkhead answers before any of the
        # per-call set-up below (and costs a few microseconds, not tens).
        wait = self.breaker.seconds_until_half_open()
        if wait > 0 or self.bulkhead.full:
            return self._refuse(method, endpoint, wait, fallback)
        session = self._current_session(method, endpoint)
        request_id = request_id_var.get() or secrets.token_hex(16)
        record = CallRecord(self.service_name, method, endpoint, request_id)
        url, hdrs, body = self._encode(
            record, url, params=params, json=json, headers=headers, idempotency_key=idempotency_key
        )
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or idempotency_key is not None
        clock = self.clock
        deadline = self._deadline(timeout)
        out = _Outbound(
            session=session,
            url=url,
            params=dict(params) if params else None,
            body=body,
            headers=hdrs,
            record=record,
            forward_deadline=self.config.propagate_deadline and deadline.bounded,
        )
        if tracing.enabled:
            record.span = start_call_span(record, url)
        started = clock.now()
        task = cast("asyncio.Task[Any]", asyncio.current_task())  # a coroutine runs in a task
        calls = self._calls
        calls.add(task)
        try:
            if self._closed:  # closed by another thread between the check above and here
                raise self._closed_error(method, endpoint)
            result = await self._pipeline.execute(
                functools.partial(self._send, out), record, deadline, idempotent=idempotent
            )
        except ClientError as error:
            return self._failed(record, error, clock.now() - started, sent=json, fallback=fallback)
        except asyncio.CancelledError as exc:
            return self._cancelled(exc, record, clock.now() - started, sent=json, fallback=fallback)
        finally:
            calls.discard(task)
            if self._closed:
                self._left(task)
        if record.span is not None:
            end_span(record.span, record, None)
        self.observer.finished(record, clock.now() - started, None, json, result)
        return result

    def _encode(
        self,
        record: CallRecord,
        url: URL,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> tuple[URL, dict[str, str], bytes | None]:
        """The URL (with its query), headers and body every attempt sends.

        Raises ``RequestEncodeError`` when any of them cannot be sent.
        """
        hdrs = dict(self._headers)
        if headers or idempotency_key is not None:
            problem = _header_problem(headers, idempotency_key)
            if problem is not None:
                raise self._unsendable(record, problem)
            if headers:
                hdrs.update(headers)
            if idempotency_key is not None:
                hdrs["Idempotency-Key"] = idempotency_key
        hdrs["X-Request-ID"] = record.request_id
        body = None
        if json is not None:
            try:
                body = orjson.dumps(json)
            except TypeError as exc:  # orjson.JSONEncodeError: an int past 64 bits, an unknown type
                raise self._unsendable(record, f"request body cannot be encoded as JSON: {exc}") from exc
            hdrs["Content-Type"] = "application/json"
        if params:
            # Encoded once here, not by aiohttp on every attempt, so a value it cannot
            # encode is a typed error before anything is sent.
            problem = _query_problem(params)
            if problem is not None:
                raise self._unsendable(record, problem)
            try:
                url = url.extend_query(params)
            except (TypeError, ValueError) as exc:
                raise self._unsendable(record, "query parameters cannot be encoded") from exc
        return url, hdrs, body

    def _unsendable(self, record: CallRecord, problem: str) -> RequestEncodeError:
        """A call refused before anything was sent because the request cannot be encoded.

        Counted and logged like every finished call (outcome ``invalid_request``, no
        attempt), as the refusals of an open breaker or a full bulkhead are; never
        retried, never seen by the breaker, and never answered by a fallback: the fault
        is the caller's. The body is not logged (it could not even be encoded).
        """
        error = RequestEncodeError(
            problem,
            service_name=self.service_name,
            method=record.method,
            endpoint=record.endpoint,
            attempts=0,
        )
        self.observer.finished(record, 0.0, error)
        return error

    def _cancelled(
        self, exc: asyncio.CancelledError, record: CallRecord, seconds: float, *, sent: Any, fallback: Any
    ) -> Any:
        """A call cancelled while it ran: the cancellation goes on, unless close() did it.

        Cut short by close() (in an attempt, or waiting for the bulkhead, the rate limit
        or a retry), the call ends in ClientClosedError, counted and logged as a failed
        call with outcome ``client_closed``. The policies below saw only a cancellation,
        which none of them counts: no retry, no breaker failure or success.
        """
        if self._closed and self._take_abort():
            error = self._closed_error(record.method, record.endpoint, record.attempts)
            return self._failed(record, error, seconds, sent=sent, fallback=fallback)
        if record.span is not None:
            end_cancelled(record.span)
        raise exc

    def _failed(
        self, record: CallRecord, error: ClientError, seconds: float, *, sent: Any, fallback: Any
    ) -> Any:
        """A call that failed: counted and logged, then its fallback's value, or the error raised."""
        if record.span is not None:
            end_span(record.span, record, error)
        # The client's own shutdown is not the upstream being unavailable: no fallback.
        if falls_back(fallback, error) and not isinstance(error, ClientClosedError):
            self.observer.finished(record, seconds, error, sent, None, fallback=True)
            mark_degraded(self.service_name)
            return resolve(fallback, error)
        self.observer.finished(record, seconds, error, sent, None)
        raise error

    def _refuse(self, method: str, endpoint: str, breaker_wait: float, fallback: Any) -> Any:
        """A call refused before anything was sent (open breaker, full bulkhead): the lean path."""
        if breaker_wait > 0:
            cls: type[ClientError] = CircuitBreakerOpenError
            reason: Rejection = "breaker_open"
            retry_after = None if math.isinf(breaker_wait) else breaker_wait
        else:
            cls, reason, retry_after = BulkheadFullError, "bulkhead_full", None
        record = CallRecord(self.service_name, method, endpoint, "")
        error = cls(
            cls.reason,
            service_name=self.service_name,
            method=method,
            endpoint=endpoint,
            attempts=0,
            retry_after=retry_after,
        )
        if falls_back(fallback, error):
            self.observer.refused(record, reason, error, fallback=True)
            mark_degraded(self.service_name)
            return resolve(fallback, error)
        self.observer.refused(record, reason, error)
        raise error

    def _deadline(self, timeout: float | None) -> Deadline:
        """The call's deadline: its own budget, inside the inbound request's, less a margin."""
        budget = timeout if timeout is not None else self.config.total_timeout_seconds
        inbound = inbound_deadline_var.get()
        if inbound is not None:
            left = inbound - time.monotonic() - self.config.deadline_safety_margin_seconds
            budget = left if budget is None else min(budget, left)
        if budget is not None and budget <= 0:
            # The caller has given up already; an immediate timeout is the honest answer.
            return Deadline(self.clock, self.clock.now())
        return Deadline.after(self.clock, budget)

    async def _send(self, out: _Outbound, timeout: float) -> Any:
        """One attempt: send, read a bounded body, decode or map the status to an error."""
        record, session, headers = out.record, out.session, out.headers
        method, url, body = record.method, out.url, out.body
        if out.forward_deadline or record.span is not None:
            headers = dict(headers)  # per attempt: hedged attempts run side by side
            if out.forward_deadline:
                headers["X-Request-Timeout-Ms"] = str(int(timeout * 1000))
        span = start_attempt_span(record, headers) if record.span is not None else None
        ctx: ErrorContext = {
            "service_name": self.service_name,
            "method": record.method,
            "endpoint": record.endpoint,
        }
        # aiohttp's own total timeout bounds the attempt (connect, send, headers, body):
        # it costs less per call than a second timer around it. ceil_threshold=inf stops
        # aiohttp rounding long timeouts up to whole seconds, past the deadline.
        attempt_timeout = self._client_timeout if timeout == self.config.timeout_seconds else None
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                async with session.request(
                    method,
                    url,  # the query is already in it (request() encoded params once)
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    # Bodies are decoded by read_body, in bounded steps: aiohttp's decoder
                    # would inflate a whole network read at once (a bomb's first 64 KiB).
                    auto_decompress=False,
                    timeout=attempt_timeout
                    or aiohttp.ClientTimeout(total=max(0.0, ends - loop.time()), ceil_threshold=math.inf),
                ) as resp:
                    status = resp.status
                    record.status = status
                    if status in _REDIRECTS and self.config.follow_redirects:
                        method, url, body = self._redirect(resp, method, url, body, ctx)
                        attempt_timeout = None  # the next hop gets what is left
                        continue
                    result = await self._finish(resp, ctx)
                    if span is not None:
                        end_span(span, record, None)
                    return result
            raise ClientResponseError("too many redirects", status=record.status, **ctx)
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            error = self._transport_error(exc, timeout, ctx, session)
            raise_from = exc
        except ClientError as exc:
            if span is not None:
                end_span(span, record, exc)
            raise
        except asyncio.CancelledError:
            # A hedge's loser, a caller that gave up, or close(). Even for close() the
            # cancellation goes on up to request(), which turns it into ClientClosedError:
            # the breaker must not see that error, as aiobreaker counts any error it is
            # told to exclude as a success (a reset count, a half-open breaker closed).
            if span is not None:
                end_cancelled(span)
            raise
        finally:
            CallObserver.attempt(record, out.params)
        if span is not None:
            end_span(span, record, error)
        raise error from raise_from

    def _transport_error(
        self, exc: BaseException, timeout: float, ctx: ErrorContext, session: aiohttp.ClientSession
    ) -> ClientError:
        """The typed error for what went wrong below HTTP (DESIGN §4)."""
        if isinstance(exc, RuntimeError) and not session.closed:
            raise exc  # a defect of ours, not something the upstream did
        if self._closed or isinstance(exc, RuntimeError):
            # close() shut the connection under this attempt, or the owner of an injected
            # session closed it ("Session is closed"): our side's doing, not the upstream's.
            self._take_abort()
            return ClientClosedError("client closed while the call was in flight", **ctx)
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            return ClientTimeoutError(f"no response within {timeout:.3f}s", **ctx)
        if isinstance(exc, aiohttp.ClientConnectorError):
            # The connection was never made, so the request was never sent.
            return ClientConnectionError("connect failed", request_sent=False, **ctx)
        return ClientConnectionError(f"connection broke: {type(exc).__name__}", **ctx)

    def _redirect(
        self,
        resp: aiohttp.ClientResponse,
        method: str,
        url: URL,
        body: bytes | None,
        ctx: ErrorContext,
    ) -> tuple[str, URL, bytes | None]:
        """The next hop of a followed redirect, or a ClientResponseError that says why not.

        A hop must stay under the base URL (same origin, same path prefix): following it
        elsewhere would hand our API key to whatever the Location names. Credentials in a
        Location are refused, never used.
        """
        status = resp.status
        location = resp.headers.get(aiohttp.hdrs.LOCATION)
        if not location:
            raise ClientResponseError("redirect without Location", status=status, **ctx)
        kept = header_text(location)
        try:
            target = url.join(URL(location))
            origin = target.origin()
            path = target.path
        except (ValueError, TypeError) as exc:  # yarl: a bad IPv6 literal or port, surrogates
            raise ClientResponseError(
                "malformed redirect Location", status=status, location=kept, **ctx
            ) from exc
        if origin != self._origin:
            raise ClientResponseError("refusing a cross-origin redirect", status=status, location=kept, **ctx)
        if target.raw_user is not None or target.raw_password is not None:
            raise ClientResponseError(
                "refusing a redirect with credentials in its Location",
                status=status,
                location=str(target.with_user(None)),  # the credentials are not kept either
                **ctx,
            )
        if not target.raw_path.startswith(self._path_prefix) or any(
            segment in (".", "..") for segment in path.split("/")
        ):
            raise ClientResponseError(
                "refusing a redirect outside the base URL's path", status=status, location=kept, **ctx
            )
        if target.raw_fragment:
            target = target.with_fragment(None)
        if status == 303 or (status in (301, 302) and method == "POST"):
            return "GET", target, None
        return method, target, body

    async def _finish(self, resp: aiohttp.ClientResponse, ctx: ErrorContext) -> Any:
        status = resp.status
        limit = self.config.max_response_bytes
        cap = self.config.retry_max_delay
        try:
            raw = await read_body(resp, limit)
        except (BodyTooLargeError, BodyDecodingError) as exc:
            resp.close()  # drop the connection rather than drain a body we will not use
            if not 200 <= status < 300:
                raise status_error(status, resp.headers, "", b"", max_retry_after=cap, **ctx) from exc
            if isinstance(exc, BodyTooLargeError):
                raise decode_error(f"body over the {limit}-byte limit", status, **ctx) from None
            raise decode_error(f"body cannot be decoded: {exc}", status, **ctx) from exc
        content_type = resp.content_type
        if not 200 <= status < 300:  # a final 1xx (or a status under 100) is no answer either
            raise status_error(status, resp.headers, content_type, raw, max_retry_after=cap, **ctx)
        try:
            return decode_body(status, content_type, resp.charset, raw)
        except ValueError as exc:
            # The content type is the upstream's text: it is not repeated in the message.
            raise decode_error("body is not valid JSON", status, **ctx) from exc
