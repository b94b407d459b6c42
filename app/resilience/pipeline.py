"""The pipeline: rate limit, bulkhead, deadline, retry (budget, hedging), breaker, attempt timeout.

The order is .NET's standard resilience handler's: the rate limiter and the bulkhead
wait count against the deadline; the breaker sees every attempt, so an open breaker
cuts retries short; no retry sleeps past the deadline; and each attempt gets
``min(attempt timeout, remaining deadline)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from app.errors import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    ErrorContext,
    RateLimitedError,
    Rejection,
    retry_exhausted,
)
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import BreakerRejectedError, CircuitBreakerPolicy
from app.resilience.breaker_engine import BreakerOutcomes
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead, BulkheadRejectedError
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.hedging import HedgingPolicy
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy

__all__ = [
    "Attempt",
    "CallRecord",
    "Pipeline",
    "PipelineEvents",
    "SharedRateLimiter",
    "is_breaker_failure",
    "is_breaker_neutral",
    "raise_settled",
]

T = TypeVar("T")


def is_breaker_failure(error: BaseException) -> bool:
    """What the breaker counts: connection errors, timeouts, 5xx and 429.

    A 4xx caused by the caller's own request says nothing about the upstream's health.
    """
    if isinstance(error, ClientClosedError):
        return False  # our own shutdown says nothing about the upstream
    if isinstance(error, ClientConnectionError | ClientTimeoutError):
        return True
    if isinstance(error, ClientError):
        status = error.status
        return status is not None and (status >= 500 or status == 429)
    # Anything else escaping an attempt is a defect on our side, not the upstream's.
    return False


def is_breaker_neutral(error: BaseException) -> bool:
    """What the breaker ignores altogether: our own shutdown, and one instance's failure.

    Neither fails nor clears it. While other instances of the upstream answer, one sick
    instance is the balancer's to route around; the breaker speaks for the whole service.
    """
    return isinstance(error, ClientClosedError) or (isinstance(error, ClientError) and error.instance_local)


class CallRecord:
    """What one logical call did, filled in as it runs; read by logging, metrics and tracing."""

    __slots__ = (
        "attempts",
        "endpoint",
        "instance",
        "method",
        "request_id",
        "retry_waits",
        "service",
        "span",
        "status",
    )

    def __init__(self, service: str, method: str, endpoint: str, request_id: str) -> None:
        self.service = service
        self.method = method
        self.endpoint = endpoint
        self.request_id = request_id
        self.attempts = 0
        self.status: int | None = None
        self.retry_waits = 0.0
        self.span: Any = None
        #: The instance (``host:port``) of the latest attempt, when the upstream has several.
        self.instance: str | None = None

    def context(self) -> ErrorContext:
        """What names this call in its errors (a new dict each time: errors keep theirs)."""
        return {"service_name": self.service, "method": self.method, "endpoint": self.endpoint}


class Attempt(Generic[T]):
    """One attempt of a call that the fused fast path may send bare, without its wrapper.

    Any ``Callable[[float], Awaitable[T]]`` is an attempt to the pipeline; calling this one
    runs it whole, as any other. When ``bare`` is True, the fused fast path instead awaits
    ``send(timeout)`` in its own frame and tells the attempt how it ended (``answered()``,
    or ``failed(error)``, which gives the error to raise): what the wrapper would have done
    around the send, without the wrapper's coroutine (~0.3 KB a call in flight).
    """

    # Set by Pipeline.start for the first attempt it sends: the breaker state it reports
    # to, and the attempt timeout the call started with (its retries keep it). So an
    # Attempt is one call's: calls must not share one.
    __slots__ = ("outcomes", "timeout")
    outcomes: BreakerOutcomes
    timeout: float

    #: True when ``send`` and the two hooks together are the whole attempt.
    bare: bool = False

    def __call__(self, timeout: float) -> Awaitable[T]:
        """The whole attempt."""
        raise NotImplementedError

    def send(self, timeout: float) -> Awaitable[T]:
        """The attempt's send alone (only called when ``bare``)."""
        return self(timeout)

    def answered(self) -> None:
        """A bare send was answered."""

    def failed(self, error: BaseException) -> BaseException:
        """A bare send raised ``error`` (a cancellation too): the error to raise in its place, or itself."""
        return error


def raise_settled(error: BaseException, original: BaseException) -> NoReturn:
    """Raise what a failed attempt settled on: ``original`` itself, or its replacement with its cause."""
    try:
        if error is original:
            raise original
        raise error from original.__cause__
    finally:
        del error, original  # see _raising


async def _raising(error: BaseException) -> NoReturn:
    try:
        raise error
    finally:
        # The error's traceback holds this frame: were the frame to hold the error, each
        # failed call would leave a reference cycle for the gc (every call, while an
        # upstream is down). The same goes for every frame an error of a call passes.
        del error


class _Whole(Attempt[T]):
    """Any other attempt, for the fused fast path: sent whole (its own wrapper tells what it must)."""

    __slots__ = ("_call",)
    bare = True

    def __init__(self, call: Callable[[float], Awaitable[T]]) -> None:
        self._call = call

    def send(self, timeout: float) -> Awaitable[T]:
        """The whole attempt."""
        return self._call(timeout)


class PipelineEvents(Protocol):
    """Where the pipeline reports what its policies did."""

    def retry(self, record: CallRecord, error: ClientError, wait: float) -> None:
        """A failed attempt will be retried after ``wait`` seconds."""
        ...

    def rejected(self, record: CallRecord, reason: Rejection) -> None:
        """A policy refused the call."""
        ...

    def hedged(self, record: CallRecord) -> None:
        """A backup attempt started."""
        ...


class SharedRateLimiter(Protocol):
    """A rate limit kept elsewhere (over every replica): booking a slot takes a round trip."""

    async def reserve_slot(self, max_wait: float) -> tuple[float, float | None]:
        """As ``RateLimiter.reserve_slot``: the wait and the slot, or (-time to a slot, None)."""
        ...

    def give_back(self, slot: float | None) -> None:
        """Hand back a slot that was never used, where the limiter can."""
        ...


class _NoEvents:
    def retry(self, record: CallRecord, error: ClientError, wait: float) -> None:
        return None

    def rejected(self, record: CallRecord, reason: Rejection) -> None:
        return None

    def hedged(self, record: CallRecord) -> None:
        return None


class Pipeline:
    """Runs one logical call through the policies of one client.

    ``bulkhead``, ``breaker`` and ``retry`` are always on; ``rate_limiter``, ``budget``,
    ``hedging`` and ``adaptive`` are None when their feature is off.
    """

    __slots__ = (
        "adaptive", "attempt_timeout", "breaker", "budget", "bulkhead", "clock", "events",
        "hedging", "rate_limiter", "retry", "shared_limiter",
    )  # fmt: skip

    def __init__(
        self,
        *,
        bulkhead: Bulkhead,
        breaker: CircuitBreakerPolicy,
        retry: RetryPolicy,
        attempt_timeout: float,
        clock: Clock = MONOTONIC,
        events: PipelineEvents | None = None,
        budget: RetryBudget | None = None,
        rate_limiter: RateLimiter | None = None,
        hedging: HedgingPolicy | None = None,
        adaptive: Gradient2Limit | None = None,
        shared_limiter: SharedRateLimiter | None = None,
    ) -> None:
        self.bulkhead = bulkhead
        self.breaker = breaker
        self.retry = retry
        self.attempt_timeout = attempt_timeout
        self.clock = clock
        self.events: PipelineEvents = events or _NoEvents()
        self.budget = budget
        self.rate_limiter = rate_limiter
        self.hedging = hedging
        self.adaptive = adaptive
        #: The global limit (``rate_limit_scope="global"``), used when ``rate_limiter`` is None.
        self.shared_limiter = shared_limiter
        if adaptive is not None:
            bulkhead.set_limit(adaptive.current)

    def _error(self, cls: type[ClientError], message: str, record: CallRecord, **kw: Any) -> ClientError:
        return cls(message, attempts=record.attempts, **record.context(), **kw)

    def start(self, attempt: Attempt[T], record: CallRecord, deadline: Deadline) -> Awaitable[T] | None:
        """A call's first attempt sent bare, to await in the caller's own frame; or None: ``execute()`` it.

        Only when nothing needs the pipeline's frame around that attempt: a bare attempt,
        no rate limit, no hedging or adaptive limit (they time attempts), a closed breaker
        counting failures in a row, a bulkhead slot free at once and time left. That slot
        is then the call's, and the retry budget is told of it, as ``execute`` would. The
        caller hands what the awaitable gave to ``answered`` or ``recover``: without
        ``execute``'s coroutine, the most common call holds ~0.4 KB less while in flight.
        """
        if (
            not attempt.bare
            or self.rate_limiter is not None
            or self.shared_limiter is not None
            or self.adaptive is not None  # ``timed``, inline: no property call per call
            or self.hedging is not None
        ):
            return None
        state = self.breaker.fast_state()
        left = deadline.remaining() if deadline.bounded else math.inf  # no call for the common call
        if state is None or left <= 0 or not self.bulkhead.try_acquire():
            return None
        if self.budget is not None:
            self.budget.request()
        attempt.outcomes, attempt.timeout = state, self.attempt_timeout
        record.attempts += 1
        try:
            return attempt.send(min(attempt.timeout, left))
        except BaseException as exc:  # a send that raises before it returns its awaitable
            return _raising(exc)  # a failure of the attempt all the same, for recover()

    def answered(self, attempt: Attempt[Any]) -> None:
        """The first attempt ``start`` sent was answered: the breaker told, the bulkhead slot freed."""
        try:
            # _succeeded's two lines inline: the most common call pays no frame for them.
            attempt.answered()
            attempt.outcomes.succeeded()
        finally:
            self.bulkhead.release()

    def recover(
        self,
        attempt: Attempt[T],
        record: CallRecord,
        deadline: Deadline,
        exc: BaseException,
        *,
        idempotent: bool,
    ) -> Coroutine[Any, Any, T]:
        """The first attempt ``start`` sent raised ``exc``: raised, or the coroutine retrying it.

        Not a coroutine itself: its frame, holding the first error, would be in the
        traceback of the call's last one (a reference cycle, see ``_raising``).
        """
        try:
            error = self._settle(attempt, attempt.outcomes, exc)
        except BaseException:
            self.bulkhead.release()
            del exc
            raise
        if not isinstance(error, ClientError):  # a cancellation, or a defect: never retried
            self.bulkhead.release()
            try:
                raise_settled(error, exc)
            finally:
                del error, exc
        if error is not exc:
            error.__cause__ = exc.__cause__  # as raise_settled's "from exc.__cause__" would
        # execute() takes the call on from its first failure, with the bulkhead slot it holds.
        return self.execute(
            attempt, record, deadline, idempotent=idempotent, _failed_first=error, _timeout=attempt.timeout
        )

    @property
    def timed(self) -> bool:
        """True when a policy learns from round trips (adaptive limit, hedge delay): attempts are timed."""
        return self.adaptive is not None or self.hedging is not None

    @staticmethod
    def _succeeded(attempt: Attempt[Any], state: BreakerOutcomes) -> None:
        """A bare send was answered: the attempt told, then the breaker."""
        attempt.answered()
        state.succeeded()

    @staticmethod
    def _settle(attempt: Attempt[Any], state: BreakerOutcomes, exc: BaseException) -> BaseException:
        """A bare send's failure: the attempt's error for it, told to the breaker (a cancellation is not)."""
        error = attempt.failed(exc)
        if isinstance(error, Exception):
            state.failed(error)
        return error

    async def execute(  # noqa: PLR0912, PLR0915 - the attempts inline: no frame of their own
        self,
        attempt: Callable[[float], Awaitable[T]],
        record: CallRecord,
        deadline: Deadline,
        *,
        idempotent: bool,
        _failed_first: ClientError | None = None,
        _timeout: float | None = None,
    ) -> T:
        """Run ``attempt(timeout)`` until it succeeds or the policies give up.

        A call that ends before its first attempt is sent (cancelled, timed out or refused
        while it waits) gives its rate-limit slot back, and a bulkhead slot it was handed
        is passed on: the limiter and the bulkhead are left as if it never came.

        ``_failed_first`` and ``_timeout`` are ``recover``'s alone: the call's first attempt,
        sent by ``start``, failed with that error, and the call goes on from there in the
        bulkhead slot it holds, with the attempt timeout it started with and no hedging.
        """
        failed_first, timeout = _failed_first, _timeout
        del _failed_first  # held by failed_first alone, and dropped once raised (see _raising)
        slot: float | None = None
        if failed_first is None and (self.rate_limiter is not None or self.shared_limiter is not None):
            # In a frame of its own: its locals would make every call's frame larger.
            slot = await self._rate_limit(deadline, record)
        bulkhead = self.bulkhead
        if failed_first is None and not bulkhead.try_acquire():
            try:
                await bulkhead.acquire(deadline.remaining())
            except BulkheadRejectedError:
                self._give_back(slot)
                self.events.rejected(record, "bulkhead_full")
                raise self._error(BulkheadFullError, "bulkhead full", record) from None
            except TimeoutError as exc:
                self._give_back(slot)
                raise self._error(
                    ClientTimeoutError, "deadline exceeded waiting for a bulkhead slot", record
                ) from exc
            except BaseException:
                self._give_back(slot)
                raise
        # The attempts run in this frame, not a coroutine of their own: one frame fewer
        # per call in flight (~300 B) and to resume at every suspension.
        try:
            # What the call started with stays its own when the client is reconfigured: its
            # attempt timeout, its hedging, and (from its first failure) its retry policy.
            budget, events = self.budget, self.events
            if timeout is None:
                timeout = self.attempt_timeout
            hedging = self.hedging if idempotent and failed_first is None else None
            if budget is not None and failed_first is None:  # start() told it already
                budget.request()
            # The fused fast path sends a bare attempt bare, and any other whole.
            fused = attempt if isinstance(attempt, Attempt) and attempt.bare else _Whole(attempt)
            retry: RetryPolicy | None = None
            waits: Iterator[float] | None = None
            last: ClientError | None = None
            while True:
                if failed_first is None and deadline.remaining() <= 0:
                    raise self._error(ClientTimeoutError, "deadline exceeded", record)  # noqa: TRY301
                try:
                    if failed_first is not None:  # into the handler below, as if raised here
                        try:
                            raise failed_first
                        finally:
                            failed_first = None
                    if hedging is not None:
                        return await self._hedged(hedging, attempt, record, deadline, timeout)
                    # Not with adaptive limits or hedging configured: _one times every round
                    # trip for them (a POST's too: the hedge delay learns from every call).
                    state = None if self.timed else self.breaker.fast_state()
                    if state is None:
                        return await self._one(attempt, record, deadline, timeout)
                    # The fused fast path (a closed breaker counting failures in a row, nothing
                    # timing round trips): the attempt is awaited here, and its outcome goes to
                    # the breaker's state as aiobreaker's own wrapper would hand it, without
                    # that wrapper's coroutine and hooks, or _one's frame.
                    record.attempts += 1
                    try:
                        result = await fused.send(min(timeout, deadline.remaining()))
                    except BaseException as exc:
                        raise_settled(self._settle(fused, state, exc), exc)
                    else:
                        self._succeeded(fused, state)
                        return result
                except BreakerRejectedError as exc:
                    if last is not None:
                        # Opened by other calls while this one waited to retry: its own failure
                        # is the better answer than "breaker open".
                        if record.attempts > 1:
                            raise retry_exhausted(last) from last
                        raise last from last.__cause__
                    events.rejected(record, "breaker_open")
                    raise self._error(
                        CircuitBreakerOpenError, exc.message, record, retry_after=exc.retry_after
                    ) from None
                except ClientError as error:
                    error.attempts = record.attempts
                    last = error
                    if retry is None or waits is None:
                        # A copy: a reconfigure while the call retries cannot mix two versions of it.
                        retry = copy.copy(self.retry)
                        waits = retry.waits()
                    planned = self._wait_before_retry(
                        retry, waits, error, record, deadline, idempotent=idempotent
                    )
                    if planned is None:
                        if record.attempts > 1:
                            raise retry_exhausted(error) from error
                        raise
                    events.retry(record, error, planned[0])
                    record.retry_waits += planned[0]
                    await self._sleep_before_retry(*planned)
        except BaseException:
            if record.attempts == 0:  # nothing was sent: the rate slot was never used
                self._give_back(slot)
            raise
        finally:
            last = None  # see _raising
            bulkhead.release()

    async def _rate_limit(self, deadline: Deadline, record: CallRecord) -> float | None:
        """A slot booked with the rate limiter (this replica's, or the one over every replica), waited for."""
        slot: float | None
        if self.rate_limiter is not None:
            wait, slot = self.rate_limiter.reserve_slot(deadline.remaining())
        else:
            assert self.shared_limiter is not None  # noqa: S101 - execute calls this only with one
            # A limit over every replica: one Redis round trip.
            wait, slot = await self.shared_limiter.reserve_slot(deadline.remaining())
        if wait:
            await self._rate_wait(wait, slot, record)
        return slot

    async def _rate_wait(self, wait: float, slot: float | None, record: CallRecord) -> None:
        """Refused (``wait`` < 0, the time to a free slot) or wait for the booked slot."""
        if wait < 0:
            self.events.rejected(record, "rate_limited")
            raise self._error(RateLimitedError, "client-side rate limit reached", record, retry_after=-wait)
        try:
            await self.clock.sleep(wait)
        except BaseException:
            self._give_back(slot)
            raise

    def _give_back(self, slot: float | None) -> None:
        if slot is None:
            return
        if self.rate_limiter is not None:
            self.rate_limiter.give_back(slot)
        elif self.shared_limiter is not None:
            self.shared_limiter.give_back(slot)

    def _wait_before_retry(
        self,
        retry: RetryPolicy,
        waits: Iterator[float],
        error: ClientError,
        record: CallRecord,
        deadline: Deadline,
        *,
        idempotent: bool,
    ) -> tuple[float, int | None] | None:
        """How long to wait before retrying ``error`` and the budget's stamp, or None to give up now."""
        if not (
            record.attempts <= retry.max_retries
            and retry.is_retryable(error, idempotent=idempotent)
            # An open breaker cuts retries short: the next try would only be refused.
            and self.breaker.seconds_until_half_open() == 0
        ):
            return None
        wait = retry.wait_for(next(waits), error)
        if wait >= deadline.remaining():
            return None  # the sleep would end past the deadline: fail now instead
        stamp = None
        if self.budget is not None:
            stamp = self.budget.take_retry()
            if stamp is None:
                self.events.rejected(record, "budget_exhausted")
                error.budget_exhausted = True
                return None
        return wait, stamp

    async def _sleep_before_retry(self, wait: float, stamp: int | None) -> None:
        try:
            await self.clock.sleep(wait)
        except BaseException:
            if stamp is not None and self.budget is not None:
                self.budget.give_back(stamp)  # cancelled before the retry was sent
            raise

    def _hedged(
        self,
        hedging: HedgingPolicy,
        attempt: Callable[[float], Awaitable[T]],
        record: CallRecord,
        deadline: Deadline,
        timeout: float,
    ) -> Awaitable[T]:
        # The lambdas here, not in execute: there they would make five of its variables
        # closure cells, allocated on every call (~200 B a call in flight), hedged or not.
        return hedging.run(
            lambda: self._one(attempt, record, deadline, timeout),
            lambda: self._may_hedge(record),
        )

    def _may_hedge(self, record: CallRecord) -> bool:
        if self.budget is not None and not self.budget.try_retry():
            return False
        self.events.hedged(record)
        return True

    async def _one(
        self, attempt: Callable[[float], Awaitable[T]], record: CallRecord, deadline: Deadline, timeout: float
    ) -> T:
        """One attempt through the breaker, timed for the adaptive limit and the hedge delay."""
        record.attempts += 1
        timed = self.timed  # round trips are only timed for the policies that learn from them
        started = self.clock.now() if timed else 0.0
        try:
            result = await self.breaker.call_through(attempt, min(timeout, deadline.remaining()))
        except BreakerRejectedError:
            record.attempts -= 1  # nothing was sent
            raise
        except ClientError:
            if timed:
                self._sample(self.clock.now() - started, success=False)
            raise
        if timed:
            self._sample(self.clock.now() - started, success=True)
        return result

    def _sample(self, rtt: float, *, success: bool) -> None:
        if self.adaptive is not None:
            limit = self.adaptive.sample(rtt, self.bulkhead.in_flight)
            if limit != self.bulkhead.max_concurrent:
                self.bulkhead.set_limit(limit)
        if success and self.hedging is not None:
            self.hedging.tracker.add(rtt)
