"""BaseServiceClient: one upstream's verbs, each call through the resilience pipeline, and fallbacks."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, Self, TypedDict, TypeVar, Unpack

import aiohttp

from app.auth import Credentials
from app.clients.attempt import AuthorizedAttempt, TransportAttempt
from app.clients.balanced import BalancedTransport
from app.clients.caching import CACHED_METHODS, CachedCall, ClientCache, credential_scope
from app.clients.config import ClientConfig
from app.clients.fallback import NO_FALLBACK, falls_back, mark_degraded, resolve
from app.clients.inflight import InFlight
from app.clients.lean_transport import default_transport
from app.clients.outbound import UnsendableError, call_credentials, client_headers, encode_request
from app.clients.policies import ClientPolicies
from app.clients.reconfigure import check_live
from app.clients.response import RawResponse
from app.clients.sync import SyncBridge, sync_twin
from app.clients.transport import (
    RAW_BODY,
    RAW_CONDITIONAL,
    Request,
    Transport,
    TransportFactory,
    reconfigure_transport,
)
from app.clients.urls import EndpointResolver
from app.clients.validation import check_answer, check_request
from app.errors import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientAuthenticationError,
    ClientClosedError,
    ClientError,
    ClientTimeoutError,
    ErrorContext,
    InvalidRequestError,
    Rejection,
    RequestEncodeError,
    ResponseDecodeError,
    TokenEndpointError,
)
from app.observability.context import inbound_deadline_var, request_id_var
from app.observability.request_ids import new_request_id
from app.observability.tracing import tracing
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.retry import IDEMPOTENT_METHODS

__all__ = ["BaseServiceClient", "CallOptions"]

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M")

#: How long close() waits for the calls it cut short to unwind before it closes the transports.
_CLOSE_GRACE = 2.0
# The usual methods as callers spell them, to their canonical strings: the same object
# for every call, where ``upper()`` makes a new one each time, held while the call runs.
_METHODS = {m: m for m in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH")}
_METHODS.update({m.lower(): m for m in _METHODS})


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
    response_model: Any
    cache: bool | None


class BaseServiceClient:
    """A typed, resilient HTTP client for one upstream service.

    Every call runs through the pipeline (bulkhead, deadline, retry, breaker, attempt
    timeout) and ends in the decoded body or a ``ClientError`` from DESIGN §4. Policies
    and the session may be injected (the container does); otherwise the client builds
    its own from ``config`` and owns them. Attempts go through the client's transport
    (:attr:`transport_factory`). Sync twins (``get_sync`` …) run on a private event-loop
    thread with a transport of their own, and share the policies. Credentials
    (``config.auth``): an API key or a static bearer token goes with the fixed headers; an
    OAuth2 token is shared by the async calls and the sync twins (see :meth:`_authorized`).
    """

    #: Builds the client's transports: one for its async calls (on ``session`` when one
    #: is injected), one for its sync twins. A subclass may name another transport.
    transport_factory: ClassVar[TransportFactory] = default_transport

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
        policies.add_client(self)  # so a new config for the policies reaches this client too
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
            shared_limiter=policies.shared_limiter,
        )
        self._resolver = EndpointResolver(cfg.base_url)
        self._plain_urls = self._resolver.plain_urls
        self._headers = client_headers(cfg)
        #: The upstream's response cache (shared with the policies), None when ``cache_enabled`` is off.
        self._cache = policies.cache
        #: Whose answers this client's calls get (see ``credential_scope``), and the headers that say it.
        self.cache_scope = credential_scope(cfg)
        # A token that changes (OAuth2) is asked for per call; a static credential is in _headers.
        metrics = self.observer.metrics
        self._credentials: Credentials | None = call_credentials(
            cfg, clock, None if metrics is None else metrics.families
        )
        balancer = policies.balancer
        if balancer is None:
            self._transport: Transport = self.transport_factory(cfg, session=session)
            sync_transport: Transport = self.transport_factory(cfg)
        else:  # many instances: each attempt to the one the balancer picks
            factory, discovery = self.transport_factory, policies.discovery
            self._transport = BalancedTransport(
                balancer, factory, cfg, clock=clock, session=session, discovery=discovery
            )
            sync_transport = BalancedTransport(balancer, factory, cfg, clock=clock, discovery=discovery)
        self._sync = SyncBridge(
            cfg.service_name,
            sync_transport,
            lambda: ClientClosedError(service_name=self.service_name),
        )
        self._closed = False
        self._inflight = InFlight()
        self._calls = self._inflight.tasks  # request() adds and discards each call's task here
        # Every call without a budget shares this one: none held per call in flight.
        self._unbounded = Deadline.never(clock)

    def __repr__(self) -> str:
        name, url = type(self).__name__, self.config.base_url
        return f"{name}(service_name={self.service_name!r}, base_url={url!r})"

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        """The async calls' aiohttp session, when their transport has one (tests look into its pool)."""
        session: aiohttp.ClientSession | None = getattr(self._transport, "session", None)
        return session

    @property
    def fixed_headers(self) -> Mapping[str, str]:
        """The headers every call sends (static credentials included: never log them)."""
        return self._headers

    @property
    def calls_in_flight(self) -> int:
        """How many calls are inside ``request()`` now, on any loop (waiting or sent)."""
        return len(self._calls)

    # -- live configuration --------------------------------------------------------

    def reconfigure(self, config: ClientConfig) -> None:
        """Take ``config`` in place: the same client, policies, metrics and connections go on.

        Calls from now on follow it (timeouts, retries, hedging, deadline, headers, limits);
        a call in flight keeps its attempt timeout, deadline and hedging, and from its
        first failure its retry policy, so none fails because of the change. Every policy
        keeps its state (see ``ClientPolicies.reconfigure``): the breaker its state, counts
        and current opening; the bulkhead its calls in flight and waiting (a larger size
        admits waiters at once, a smaller one admits none until the calls in flight are
        below it); the pool follows the bulkhead. An upstream of several instances takes a
        new ``instances`` list or discovery source, draining the instances that left.

        ``ValueError``, with nothing changed, when ``config`` changes a field that cannot
        change live (``reconfigure_problems`` names each).
        """
        check_live(self.config, config)
        policies = self.policies
        policies.reconfigure(config)  # first: it may still refuse, before anything changed
        # The waiters a larger bulkhead woke run once this returns (in this loop), by
        # when their pool has grown too.
        for transport in (self._transport, self._sync.transport):
            reconfigure_transport(transport, config)
            if isinstance(transport, BalancedTransport):
                transport.use_discovery(policies.discovery)
        # Each read once per call, as before: a call takes the old or the new, whole.
        self._pipeline.attempt_timeout = config.timeout_seconds
        self._headers = client_headers(config)
        self.cache_scope = credential_scope(config)
        self.config = config

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
        does not count them), the sync twins' transport and loop thread are closed, and so
        is the session the client opened itself (an injected one belongs to its owner).
        Later calls raise ``ClientClosedError``. Calling it again is harmless.
        """
        self._closed = True
        inflight, bridge = self._inflight, self._sync
        inflight.abort_elsewhere(asyncio.get_running_loop(), bridge.loop)
        await inflight.end_here(_CLOSE_GRACE)
        await bridge.aclose(functools.partial(inflight.end_here, _CLOSE_GRACE), 2 * _CLOSE_GRACE)
        await self._transport.aclose()
        if self._credentials is not None:
            await self._credentials.aclose()
        self.observer.settle()  # the last second's refusals reach the metrics, whoever scrapes next

    def close_sync(self) -> None:
        """End every call in flight with ``ClientClosedError`` and close the sync twins' side.

        For code without an event loop (and ``with client:``). Calls on other threads'
        loops are cut short too; a session the async methods opened is left for
        ``await close()``, which must run on its own loop.
        """
        self._closed = True
        inflight, bridge = self._inflight, self._sync
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is not None:
            inflight.abort_here()  # they end on their own; this thread cannot wait for them
        inflight.abort_elsewhere(here, bridge.loop)
        bridge.close_blocking(functools.partial(inflight.end_here, _CLOSE_GRACE), 2 * _CLOSE_GRACE, here)
        if self._credentials is not None:
            self._credentials.close()  # a token fetch on another loop is cancelled there
        self.observer.settle()

    def _closed_error(self, method: str, endpoint: str, attempts: int = 0) -> ClientClosedError:
        return ClientClosedError(
            service_name=self.service_name, method=method, endpoint=endpoint, attempts=attempts
        )

    def _run_sync(self, fn: Callable[P, Coroutine[Any, Any, R]], *a: P.args, **kw: P.kwargs) -> R:
        if self._closed:  # before the loop thread: a closed client starts no thread
            raise ClientClosedError(service_name=self.service_name)
        return self._sync.run(fn, *a, **kw)

    # -- the four verbs and their sync twins -----------------------------------------

    # Plain functions returning request()'s coroutine, awaited by the caller: a coroutine
    # of their own would add a frame to every call, resumed at every suspension and
    # unwound by every error (a refusal's cost is mostly such frames). Without options they
    # call request() without ``**``: passing even an empty dict by ``**`` into its keyword-only
    # parameters costs ~1.1k instructions a call (callgrind, a refusal through get()).
    def get(self, endpoint: str, **options: Unpack[CallOptions]) -> Coroutine[Any, Any, Any]:
        """GET ``endpoint``; retried by default. Options as for :meth:`request`."""
        return self.request("GET", endpoint, **options) if options else self.request("GET", endpoint)

    def post(self, endpoint: str, **options: Unpack[CallOptions]) -> Coroutine[Any, Any, Any]:
        """POST ``endpoint``; retried only with ``idempotent=True`` or an ``idempotency_key``."""
        return self.request("POST", endpoint, **options) if options else self.request("POST", endpoint)

    def put(self, endpoint: str, **options: Unpack[CallOptions]) -> Coroutine[Any, Any, Any]:
        """PUT ``endpoint``; retried by default."""
        return self.request("PUT", endpoint, **options) if options else self.request("PUT", endpoint)

    def delete(self, endpoint: str, **options: Unpack[CallOptions]) -> Coroutine[Any, Any, Any]:
        """DELETE ``endpoint``; retried by default."""
        return self.request("DELETE", endpoint, **options) if options else self.request("DELETE", endpoint)

    get_sync = sync_twin(get)
    post_sync = sync_twin(post)
    put_sync = sync_twin(put)
    delete_sync = sync_twin(delete)

    # -- one logical call ------------------------------------------------------------

    async def request(  # noqa: PLR0912, PLR0915 - one function: the hot path pays no extra frame
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
        response_model: Any = None,
        cache: bool | None = None,
        _conditional: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one logical call through the pipeline and return the decoded body.

        ``timeout`` is the deadline of the whole call (retries included); without it,
        ``total_timeout_seconds`` applies, and without that there is none. An inbound
        deadline (``inbound_deadline_var``) shortens it further. ``fallback`` (a value,
        or a function of the error) answers an unavailable or timed-out call instead of
        raising; such a result is reported to ``collect_degraded()``.

        ``response_model`` (a pydantic model, or any type a ``TypeAdapter`` takes, such as
        ``list[Model]``) validates the answer and returns it as that type, per the
        client's ``response_validation`` mode. ``cache``: with the client's cache on
        (``cache_enabled``), GET and HEAD go through it; ``False`` bypasses it for this
        call, ``True`` also caches a call of another method (a pure computation's POST,
        keyed by its body too). ``_conditional`` is the cache's own fetch (not for callers):
        the request carries those headers, and a 2xx or a 304 comes back whole, as a
        ``RawResponse``.
        """
        method = _METHODS.get(method) or method.upper()
        if self._closed:
            raise self._closed_error(method, endpoint)
        # The resolver's cache read here first: its method call would cost every call ~0.6k.
        url = None if path_params else self._plain_urls.get(endpoint)
        if url is None:
            url = self._resolver.resolve(endpoint, path_params)  # ValueError before anything is sent
        if timeout is not None and not timeout > 0:  # "not >" also refuses nan
            raise ValueError("timeout must be > 0")
        if self._cache is not None and _conditional is None and cache is not False:
            call = CachedCall(
                method, endpoint, url, params, json, headers, path_params,
                timeout, idempotent, idempotency_key,
            )  # fmt: skip
            return await self._through_cache(self._cache, call, cache, fallback, response_model)
        # Fast refusals: an open breaker or a full bulkhead answers before any of the
        # per-call set-up below (and costs a few microseconds, not tens).
        wait = self.breaker.seconds_until_half_open()
        bulkhead = self.bulkhead  # full only at its limit: the property asked only then
        if wait > 0 or (bulkhead.in_flight >= bulkhead.max_concurrent and bulkhead.full):
            # The error built here, not in a helper: a frame fewer on every refused call.
            reason: Rejection
            error: ClientError
            if wait > 0:  # an isolated breaker's wait is inf: no Retry-After to give
                retry_after = None if wait == math.inf else wait
                error = CircuitBreakerOpenError.refusal(self.service_name, method, endpoint, retry_after)
                reason = "breaker_open"
            else:
                error = BulkheadFullError.refusal(self.service_name, method, endpoint, None)
                reason = "bulkhead_full"
            if fallback is not NO_FALLBACK and falls_back(fallback, error):
                return self._refused_fallback(method, endpoint, reason, error, fallback)
            self.observer.refused(method, endpoint, reason, error)
            try:
                raise error  # here, not in a helper: one frame fewer for every refusal to unwind
            finally:
                del error  # its traceback holds this frame: no reference cycle (see _failed)
        # Few locals: each is 8 bytes of this frame, held as long as the call is in flight.
        # A transport's session serves one loop: the sync twins' loop has its own.
        loop = asyncio.get_running_loop()
        transport = self._sync.transport if loop is self._sync.loop else self._transport
        record = CallRecord(self.service_name, method, endpoint, request_id_var.get() or new_request_id())
        try:
            url, hdrs, body = encode_request(
                self._headers, record.request_id, url, params, json, headers, idempotency_key
            )
        except UnsendableError as exc:
            raise self._unsendable(record, str(exc)) from exc.__cause__
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or idempotency_key is not None
        # _deadline's answer for the common call (no budget, none inbound), without its frame.
        if (
            timeout is None
            and self.config.total_timeout_seconds is None
            and inbound_deadline_var.get() is None
        ):
            deadline = self._unbounded
        else:
            deadline = self._deadline(timeout)
        out = Request(  # record, url, body, headers, params, forward_deadline, traced
            record,
            url,
            body,
            hdrs,
            dict(params) if params else None,
            self.config.propagate_deadline and deadline.bounded,
            # Tracing asked here first: with it off (the common case) no observer call.
            tracing.is_enabled() and self.observer.call_started(record, url),
        )
        if _conditional is not None:
            hdrs.update(_conditional)  # out.headers: the same dict
            out.raw = RAW_CONDITIONAL
        elif response_model is not None and self.config.response_validation != "off":
            out.raw = RAW_BODY  # validated from the bytes: no decode to Python objects first
        started = self.clock.now()
        # A coroutine runs in a task: an annotation, not cast() (a call on every call).
        task: asyncio.Task[Any] = asyncio.current_task(loop)  # type: ignore[assignment]
        self._calls.add(task)
        try:
            if self._closed:  # closed by another thread between the check above and here
                raise self._closed_error(method, endpoint)
            if self._credentials is None:
                attempt = TransportAttempt(self, transport, out)
                # The common call's first attempt is awaited here: no pipeline frame of its own.
                sent = self._pipeline.start(attempt, record, deadline)
                if sent is None:
                    result = await self._pipeline.execute(attempt, record, deadline, idempotent=idempotent)
                else:
                    failure: BaseException | None = None
                    try:
                        result = await sent
                    except BaseException as exc:
                        failure = exc  # recovered below, outside this handler: later errors are
                        # not chained to it ("during handling of the above exception")
                    if failure is None:
                        self._pipeline.answered(attempt)
                    else:  # retried, or raised as the pipeline would
                        try:
                            result = await self._pipeline.recover(
                                attempt, record, deadline, failure, idempotent=idempotent
                            )
                        finally:
                            failure = None  # see _failed
            else:
                result = await self._authorized(
                    self._credentials, transport, out, deadline, idempotent, headers
                )
        except ClientError as error:
            return self._failed(record, error, self.clock.now() - started, sent=json, fallback=fallback)
        except asyncio.CancelledError as exc:
            return self._cancelled(exc, record, self.clock.now() - started, sent=json, fallback=fallback)
        finally:
            self._calls.discard(task)
            if self._closed:
                self._inflight.left(task)
            # A failed task holds its error, whose traceback holds this frame: see _failed.
            del task
        if response_model is not None or _conditional is not None:
            try:
                result = self._checked(result, response_model, record, out)
            except ResponseDecodeError as error:
                return self._failed(record, error, self.clock.now() - started, sent=json, fallback=fallback)
        self.observer.call_ended(record, self.clock.now() - started, None, json, result)
        return result

    def _through_cache(
        self, cached: ClientCache, call: CachedCall, cache: bool | None, fallback: Any, response_model: Any
    ) -> Coroutine[Any, Any, Any]:
        """A call the response cache answers (a GET, or ``cache=True``), or one whose writes it drops.

        The cache's coroutine itself, for request() to await: no frame of this method's.
        """
        if cache or call.method in CACHED_METHODS:
            return cached.call(self, call, fallback, response_model)
        return cached.write(self, call, fallback, response_model)  # drops what it changed

    def _checked(self, result: Any, response_model: Any, record: CallRecord, out: Request) -> Any:
        """The answer validated: against ``response_model``; for the cache's fetch, as JSON that decodes.

        A body that does not decode fails the fetch (counted as a decode error), so it is
        never stored to fail every later hit.
        """
        if isinstance(result, RawResponse):
            if response_model is not None:
                return self.check_answer(response_model, result, result.status, record)
            if result.status != 304:  # Not Modified has no body
                result.check(out.context)
            return result
        return self.check_answer(response_model, result, record.status, record)

    def check_answer(self, model: type[M], data: Any, status: int | None, record: CallRecord) -> M:
        """``data`` as ``model`` per ``response_validation`` (``lax``: a mismatch logged and counted).

        ``data`` may be a ``RawResponse``: a JSON body is then validated from its bytes.
        """
        value, problem = check_answer(model, data, self.config.response_validation, record.context(), status)
        if problem is not None:
            self.observer.invalid_answer(record, problem)
        return value

    def validate_request(self, model: type[M], data: Mapping[str, Any], method: str, endpoint: str) -> M:
        """``data`` as the request model ``model``, or ``InvalidRequestError`` naming the fields.

        For typed service clients, before anything is sent: the refusal is counted and
        logged like every call that ends (outcome ``invalid_request``), never retried, never
        seen by the breaker or outlier detection, and never answered by a fallback.
        """
        context: ErrorContext = {"service_name": self.service_name, "method": method, "endpoint": endpoint}
        try:
            return check_request(model, data, context)
        except InvalidRequestError as error:
            self.observer.call_ended(CallRecord(self.service_name, method, endpoint, ""), 0.0, error)
            raise

    async def _authorized(  # noqa: PLR0917 - one call's parts, passed on as request() has them
        self,
        credentials: Credentials,
        transport: Transport,
        out: Request,
        deadline: Deadline,
        idempotent: bool,
        given: Mapping[str, str] | None,
    ) -> Any:
        """A call that carries a token: got before the pipeline, and got anew once after a 401 for it.

        Waiting for a token (bounded by the call's deadline) happens before the pipeline, so
        it holds no bulkhead slot, and neither the token endpoint's failure nor its time is
        seen by the upstream's breaker. Each attempt sends the token current then. A 401
        for the token sent drops it (when still current); the call then waits for a new one
        (one fetch for every call that saw that 401) and runs once more, with retries of
        its own: that run is outside the retry count. A second 401 is raised as it is.
        A call whose own ``headers`` carry the credential's header sends that one instead.
        """
        record, name = out.record, credentials.header
        if given and any(key.lower() == name.lower() for key in given):
            return await self._pipeline.execute(
                TransportAttempt(self, transport, out), record, deadline, idempotent=idempotent
            )
        attempt = AuthorizedAttempt(self, transport, out, credentials)
        out.headers[name] = await self._credential(credentials, out, deadline)
        try:
            return await self._pipeline.execute(attempt, record, deadline, idempotent=idempotent)
        except ClientAuthenticationError as error:
            if error.status != 401 or not credentials.rejected(out.headers[name]):
                raise
        out.headers[name] = await self._credential(credentials, out, deadline)
        if record.span is not None:
            record.span.add_event("credentials_refreshed", {"attempt": record.attempts})
        # The pipeline counts retries by the record's attempts: the run after a 401 starts
        # from none, and the call's count (logs, metrics, the error) adds both runs.
        before, record.attempts = record.attempts, 0
        try:
            return await self._pipeline.execute(attempt, record, deadline, idempotent=idempotent)
        except ClientError as error:
            error.attempts += before
            raise
        finally:
            record.attempts += before

    async def _credential(self, credentials: Credentials, out: Request, deadline: Deadline) -> str:
        """The value to send, waiting for a token at most until the call's deadline."""
        left = deadline.remaining()
        try:
            return await credentials.authorization(None if math.isinf(left) else left)
        except TokenEndpointError as shared:
            # One fetch's error reaches every caller that waited for it: each raises its own.
            raise shared.for_call(out.context, out.record.attempts) from shared.__cause__
        except TimeoutError:
            raise ClientTimeoutError(
                "deadline exceeded waiting for a token", attempts=out.record.attempts, **out.context
            ) from None

    def _unsendable(self, record: CallRecord, problem: str) -> RequestEncodeError:
        """A call refused before anything was sent because the request cannot be encoded.

        Counted and logged like every finished call (outcome ``invalid_request``, no
        attempt), as the refusals of an open breaker or a full bulkhead are; never
        retried, never seen by the breaker, and never answered by a fallback: the fault
        is the caller's. The body is not logged (it could not even be encoded).
        """
        error = RequestEncodeError(problem, attempts=0, **record.context())
        self.observer.call_ended(record, 0.0, error)
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
        if self._closed and self._inflight.take_abort():
            # Not held by a local: this frame is in the traceback of the error _failed raises.
            return self._failed(
                record,
                self._closed_error(record.method, record.endpoint, record.attempts),
                seconds,
                sent=sent,
                fallback=fallback,
            )
        self.observer.call_cancelled(record)
        try:
            raise exc
        finally:
            del exc  # see _failed

    def _failed(
        self, record: CallRecord, error: ClientError, seconds: float, *, sent: Any, fallback: Any
    ) -> Any:
        """A call that failed: counted and logged, then its fallback's value, or the error raised."""
        if falls_back(fallback, error):
            self.observer.call_ended(record, seconds, error, sent, None, fallback=True)
            mark_degraded(self.service_name)
            return resolve(fallback, error)
        self.observer.call_ended(record, seconds, error, sent, None)
        try:
            raise error
        finally:
            # The error's traceback holds this frame: were the frame to hold the error, each
            # failed call would leave a reference cycle for the gc (every call, while an
            # upstream is down). The same goes for every frame the error passes.
            del error

    def _refused_fallback(
        self, method: str, endpoint: str, reason: Rejection, error: ClientError, fallback: Any
    ) -> Any:
        """A refused call answered by its fallback: counted and logged as such, then the fallback's value."""
        self.observer.refused(method, endpoint, reason, error, fallback=True)
        mark_degraded(self.service_name)
        return resolve(fallback, error)

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
        return self._unbounded if budget is None else Deadline.after(self.clock, budget)
