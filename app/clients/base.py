"""BaseServiceClient: one upstream, one session, every call through the resilience pipeline."""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypedDict, TypeVar, Unpack

import aiohttp
import orjson
from yarl import URL

from app.clients.config import ClientConfig
from app.clients.exceptions import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ClientTimeoutError,
    ErrorContext,
)
from app.clients.fallback import NO_FALLBACK, falls_back, mark_degraded, resolve
from app.clients.policies import (
    adaptive_from_config,
    breaker_from_config,
    budget_from_config,
    bulkhead_from_config,
    hedging_from_config,
    observer_from_config,
    rate_limiter_from_config,
    retry_from_config,
)
from app.clients.response import (
    BodyTooLargeError,
    decode_body,
    decode_error,
    read_body,
    status_error,
)
from app.clients.session import new_session
from app.clients.sync import LoopThread, sync_twin
from app.clients.urls import EndpointResolver
from app.observability.context import inbound_deadline_var, request_id_var
from app.observability.observer import CallObserver
from app.observability.redaction import register_secret
from app.observability.tracing import (
    end_cancelled,
    end_span,
    start_attempt_span,
    start_call_span,
    tracing,
)
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import IDEMPOTENT_METHODS, RetryPolicy

__all__ = ["BaseServiceClient", "CallOptions", "operation"]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def operation(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Mark a service method: a typed error passing through gains ``operation`` = its name."""
    name = method.__name__

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except ClientError as error:
            error.operation = name
            raise

    wrapper.__name__ = name
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


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


class _Unset:
    """Marks a policy argument that was not given (None already means "off")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


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
        breaker: CircuitBreakerPolicy | None = None,
        bulkhead: Bulkhead | None = None,
        retry: RetryPolicy | None = None,
        budget: RetryBudget | _Unset | None = UNSET,
        rate_limiter: RateLimiter | _Unset | None = UNSET,
        hedging: HedgingPolicy | _Unset | None = UNSET,
        adaptive: Gradient2Limit | _Unset | None = UNSET,
        observer: CallObserver | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        cfg = config if isinstance(config, ClientConfig) else ClientConfig.model_validate(config)
        self.config = cfg
        self.service_name = cfg.service_name
        self.clock = clock
        # Each policy may be injected (the container shares its Singletons this way);
        # otherwise it is built from the config, and None means the feature is off.
        self.breaker = breaker if breaker is not None else breaker_from_config(cfg, clock)
        self.bulkhead = bulkhead if bulkhead is not None else bulkhead_from_config(cfg)
        self.retry = retry if retry is not None else retry_from_config(cfg)
        self.budget = budget_from_config(cfg, clock) if isinstance(budget, _Unset) else budget
        self.rate_limiter = (
            rate_limiter_from_config(cfg, clock) if isinstance(rate_limiter, _Unset) else rate_limiter
        )
        self.hedging = hedging_from_config(cfg) if isinstance(hedging, _Unset) else hedging
        self.adaptive = adaptive_from_config(cfg) if isinstance(adaptive, _Unset) else adaptive
        self.observer = (
            observer
            if observer is not None
            else observer_from_config(cfg, self.breaker, self.bulkhead, clock)
        )
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
        self._origin = URL(cfg.base_url).origin()
        self._session = session
        self._owns_session = session is None
        self._sync = LoopThread(cfg.service_name)
        self._sync_session: aiohttp.ClientSession | None = None
        self._closed = False
        self._headers: dict[str, str] = {"Accept": "application/json"}
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
        """Close the sessions this client opened (an injected one belongs to its owner)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._sync.loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._close_sync_session(), self._sync.loop)
            await asyncio.wrap_future(future)
            self._sync.stop()

    def close_sync(self) -> None:
        """Close what the sync twins opened: their session and their loop thread."""
        if self._sync.loop is not None:
            self._sync.run(self._close_sync_session)
            self._sync.stop()
        if self._session is None or not self._owns_session:
            self._closed = True

    async def _close_sync_session(self) -> None:
        if self._sync_session is not None:
            session, self._sync_session = self._sync_session, None
            await session.close()

    def _run_sync(self, fn: Callable[P, Coroutine[Any, Any, R]], *a: P.args, **kw: P.kwargs) -> R:
        return self._sync.run(fn, *a, **kw)

    def _current_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
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
        url = self._resolver.resolve(endpoint, path_params)  # ValueError before anything is sent
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0")
        # Fast refusals: an open breaker or a full bulkhead answers before any of the
        # per-call set-up below (and costs a few microseconds, not tens).
        wait = self.breaker.seconds_until_half_open()
        if wait > 0 or self.bulkhead.full:
            return self._refuse(method, endpoint, wait, fallback)
        session = self._current_session()
        request_id = request_id_var.get() or secrets.token_hex(16)
        hdrs = dict(self._headers)
        if headers:
            hdrs.update(headers)
        hdrs["X-Request-ID"] = request_id
        if idempotency_key is not None:
            hdrs["Idempotency-Key"] = idempotency_key
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or idempotency_key is not None
        body = None
        if json is not None:
            body = orjson.dumps(json)
            hdrs["Content-Type"] = "application/json"

        record = CallRecord(self.service_name, method, endpoint, request_id)
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
        try:
            result = await self._pipeline.execute(
                functools.partial(self._send, out), record, deadline, idempotent=idempotent
            )
        except ClientError as error:
            return self._failed(record, error, clock.now() - started, sent=json, fallback=fallback)
        except asyncio.CancelledError:
            if record.span is not None:
                end_cancelled(record.span)
            raise
        if record.span is not None:
            end_span(record.span, record, None)
        self.observer.finished(record, clock.now() - started, None, json, result)
        return result

    def _failed(
        self, record: CallRecord, error: ClientError, seconds: float, *, sent: Any, fallback: Any
    ) -> Any:
        """A call that failed: counted and logged, then its fallback's value, or the error raised."""
        if record.span is not None:
            end_span(record.span, record, error)
        if falls_back(fallback, error):
            self.observer.finished(record, seconds, error, sent, None, fallback=True)
            mark_degraded(self.service_name)
            return resolve(fallback, error)
        self.observer.finished(record, seconds, error, sent, None)
        raise error

    def _refuse(self, method: str, endpoint: str, breaker_wait: float, fallback: Any) -> Any:
        """A call refused before anything was sent (open breaker, full bulkhead): the lean path."""
        if breaker_wait > 0:
            cls: type[ClientError] = CircuitBreakerOpenError
            reason = "breaker_open"
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
        method, url, params, body = record.method, out.url, out.params, out.body
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
                    url,
                    params=params,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=attempt_timeout
                    or aiohttp.ClientTimeout(total=max(0.0, ends - loop.time()), ceil_threshold=math.inf),
                ) as resp:
                    status = resp.status
                    record.status = status
                    if status in _REDIRECTS and self.config.follow_redirects:
                        method, url, body = self._redirect(resp, method, url, body, ctx)
                        params = None  # the Location carries the query
                        attempt_timeout = None  # the next hop gets what is left
                        continue
                    result = await self._finish(resp, ctx)
                    if span is not None:
                        end_span(span, record, None)
                    return result
            raise ClientResponseError("too many redirects", status=record.status, **ctx)
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = self._transport_error(exc, timeout, ctx)
            raise_from: BaseException = exc
        except ClientError as exc:
            if span is not None:
                end_span(span, record, exc)
            raise
        except asyncio.CancelledError:
            if span is not None:
                end_cancelled(span)  # a hedge's loser, or a caller that gave up
            raise
        finally:
            CallObserver.attempt(record, params)
        if span is not None:
            end_span(span, record, error)
        raise error from raise_from

    @staticmethod
    def _transport_error(exc: BaseException, timeout: float, ctx: ErrorContext) -> ClientError:
        """The typed error for what went wrong below HTTP (DESIGN §4)."""
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
        location = resp.headers.get("Location")
        if not location:
            raise ClientResponseError("redirect without Location", status=resp.status, **ctx)
        target = url.join(URL(location))
        if target.origin() != self._origin:
            # Following would hand our API key to another origin.
            raise ClientResponseError(
                "refusing a cross-origin redirect", status=resp.status, location=location, **ctx
            )
        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
            return "GET", target, None
        return method, target, body

    async def _finish(self, resp: aiohttp.ClientResponse, ctx: ErrorContext) -> Any:
        status = resp.status
        limit = self.config.max_response_bytes
        try:
            raw = await read_body(resp, limit)
        except BodyTooLargeError:
            resp.close()  # drop the connection rather than drain an oversized body
            if status >= 300:
                raise status_error(status, resp.headers, "", b"", **ctx) from None
            raise decode_error(f"body over the {limit}-byte limit", status, **ctx) from None
        if status >= 300:
            raise status_error(status, resp.headers, resp.content_type, raw, **ctx)
        try:
            return decode_body(status, resp.content_type, resp.charset, raw)
        except ValueError as exc:
            raise decode_error(f"body is not valid {resp.content_type}", status, **ctx) from exc
