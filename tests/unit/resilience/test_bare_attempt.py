"""A bare Attempt: sent without its wrapper (by execute's fast path, or by start in the caller's frame)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.clients.testing import FakeClock
from app.errors import ClientClosedError, ClientConnectionError, ServerError
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead
from app.resilience.deadline import Deadline
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import Attempt, CallRecord, Pipeline, is_breaker_failure, is_breaker_neutral
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy
from app.resilience.window import CountWindow
from tests.support.manual_clock import ManualClock


class Recorded(Attempt[str]):
    """Sends ``outcomes`` in turn (a value, or an error to raise); notes which way each went."""

    def __init__(self, *outcomes: Any, bare: bool = True, mapped: BaseException | None = None) -> None:
        self.queue = list(outcomes)
        self.bare = bare
        self.mapped = mapped  # what failed() makes of an error, when set
        self.log: list[str] = []
        self.timeouts: list[float] = []

    async def _next(self) -> str:
        outcome = self.queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.Event().wait()
        return str(outcome)

    def send(self, timeout: float) -> Any:
        self.log.append("send")
        self.timeouts.append(timeout)
        return self._next()

    async def __call__(self, timeout: float) -> str:
        self.log.append("whole")
        self.timeouts.append(timeout)
        return await self._next()

    def answered(self) -> None:
        self.log.append("answered")

    def failed(self, error: BaseException) -> BaseException:
        self.log.append(f"failed:{type(error).__name__}")
        return self.mapped if self.mapped is not None else error


def _pipeline(
    clock: ManualClock | FakeClock,
    *,
    retries: int = 0,
    policies: dict[str, Any] | None = None,
    **breaker: Any,
) -> Pipeline:
    return Pipeline(
        bulkhead=Bulkhead(max_concurrent=4, max_waiting=0),
        breaker=CircuitBreakerPolicy(
            failure_threshold=5,
            clock=clock,
            is_failure=is_breaker_failure,
            is_neutral=is_breaker_neutral,  # as the clients' breakers: our own close is neutral
            **breaker,
        ),
        retry=RetryPolicy(max_retries=retries, base_delay=0.1, max_delay=1.0, jitter=False),
        attempt_timeout=5.0,
        clock=clock,
        **(policies or {}),
    )


async def _run(pipeline: Pipeline, attempt: Any) -> Any:
    record = CallRecord("svc", "GET", "x", "id")
    return await pipeline.execute(attempt, record, Deadline.never(pipeline.clock), idempotent=True)


def _server_error() -> ServerError:
    return ServerError("503", status=503, service_name="svc", method="GET", endpoint="x")


async def test_a_bare_attempt_is_sent_bare_and_told_it_was_answered() -> None:
    pipeline = _pipeline(ManualClock())
    attempt = Recorded(_server_error(), "ok")
    with pytest.raises(ServerError):
        await _run(pipeline, attempt)
    assert pipeline.breaker.fail_counter == 1
    assert await _run(pipeline, attempt) == "ok"
    assert attempt.log == ["send", "failed:ServerError", "send", "answered"]  # never called whole
    assert pipeline.breaker.fail_counter == 0  # the answer reached the breaker: the count reset
    assert pipeline.bulkhead.in_flight == 0


async def test_the_error_failed_gives_is_raised_and_is_what_the_breaker_sees() -> None:
    """A failure below HTTP that failed() makes ours (a close) is raised instead, and not counted."""
    pipeline = _pipeline(ManualClock())
    lost = ClientConnectionError("reset", service_name="svc", method="GET", endpoint="x")
    lost.__cause__ = OSError("reset by peer")
    closed = ClientClosedError(service_name="svc", method="GET", endpoint="x")
    attempt = Recorded(lost, mapped=closed)
    with pytest.raises(ClientClosedError) as info:
        await _run(pipeline, attempt)
    assert info.value is closed
    assert isinstance(info.value.__cause__, OSError)  # the original's cause goes with it
    assert pipeline.breaker.fail_counter == 0  # our close says nothing about the upstream
    # Unmapped, the same failure is the upstream's.
    with pytest.raises(ClientConnectionError):
        await _run(pipeline, Recorded(lost))
    assert pipeline.breaker.fail_counter == 1


async def test_an_attempt_that_is_not_bare_is_called_whole() -> None:
    pipeline = _pipeline(ManualClock())
    attempt = Recorded(_server_error(), "ok", bare=False)
    with pytest.raises(ServerError):
        await _run(pipeline, attempt)
    assert await _run(pipeline, attempt) == "ok"
    assert attempt.log == ["whole", "whole"]  # the hooks are its own wrapper's business
    assert pipeline.breaker.fail_counter == 0


async def test_off_the_fast_path_a_bare_attempt_is_called_whole() -> None:
    """A breaker timed by a window is called through its wrapper: the attempt runs whole there."""
    pipeline = _pipeline(ManualClock(), window=CountWindow(size=10))
    attempt = Recorded("ok")
    assert await _run(pipeline, attempt) == "ok"
    assert attempt.log == ["whole"]


async def test_the_base_class_sends_itself_whole() -> None:
    """An Attempt that only defines __call__ is never bare; send() would call it whole."""

    class Plain(Attempt[str]):
        async def __call__(self, timeout: float) -> str:
            return f"whole {timeout}"

    plain = Plain()
    assert plain.bare is False
    assert await plain.send(1.5) == "whole 1.5"
    assert plain.failed(ValueError("x")).args == ("x",)
    assert await _run(_pipeline(ManualClock()), plain) == "whole 5.0"


# -- start(): the first attempt awaited in the caller's own frame, as request() does -------


class _NoWaitLimiter:
    """A shared (fleet-wide) rate limit that always has a slot."""

    async def reserve_slot(self, max_wait: float) -> tuple[float, float | None]:
        return 0.0, 1.0

    def give_back(self, slot: float | None) -> None:
        return None


async def _started(pipeline: Pipeline, attempt: Any, deadline: Deadline | None = None) -> Any:
    """A call as BaseServiceClient.request runs it: start, then answered or recover."""
    record = CallRecord("svc", "GET", "x", "id")
    deadline = deadline or Deadline.never(pipeline.clock)
    sent = pipeline.start(attempt, record, deadline)
    if sent is None:
        attempt.log.append("execute")
        return await pipeline.execute(attempt, record, deadline, idempotent=True)
    failure: BaseException | None = None
    try:
        result = await sent
    except BaseException as exc:
        failure = exc
    if failure is not None:
        return await pipeline.recover(attempt, record, deadline, failure, idempotent=True)
    pipeline.answered(attempt)
    return result


async def test_start_sends_the_first_attempt_and_answered_settles_it() -> None:
    budget = RetryBudget(clock=FakeClock())
    pipeline = _pipeline(FakeClock(), policies={"budget": budget})
    with pytest.raises(ServerError):
        await _started(pipeline, Recorded(_server_error()))
    assert pipeline.breaker.fail_counter == 1
    attempt = Recorded("ok")
    assert await _started(pipeline, attempt) == "ok"
    assert attempt.log == ["send", "answered"]
    assert attempt.timeouts == [5.0]
    assert pipeline.breaker.fail_counter == 0  # the answer reached the breaker
    assert pipeline.bulkhead.in_flight == 0
    assert budget.counts()[0] == 2  # each call counted once toward the retry budget


async def test_a_failed_first_attempt_is_retried_by_execute_with_the_slot_it_holds() -> None:
    clock = FakeClock()
    pipeline = _pipeline(clock, retries=2)
    attempt = Recorded(_server_error(), _server_error(), "ok")
    in_flight: list[int] = []
    real_send = attempt.send

    def send(timeout: float) -> Any:
        in_flight.append(pipeline.bulkhead.in_flight)
        return real_send(timeout)

    attempt.send = send  # type: ignore[method-assign]
    assert await _started(pipeline, attempt) == "ok"
    assert attempt.log == ["send", "failed:ServerError", "send", "failed:ServerError", "send", "answered"]
    assert in_flight == [1, 1, 1]  # one slot for the whole call, never a second
    assert pipeline.bulkhead.in_flight == 0
    assert clock.sleeps == [0.1, 0.2]  # the retries waited as execute's always did
    assert pipeline.breaker.fail_counter == 0


async def test_a_first_failure_not_retried_is_raised_with_its_count() -> None:
    pipeline = _pipeline(FakeClock(), retries=0)
    with pytest.raises(ServerError) as info:
        await _started(pipeline, Recorded(_server_error()))
    assert info.value.attempts == 1
    assert pipeline.breaker.fail_counter == 1
    assert pipeline.bulkhead.in_flight == 0


async def test_recover_keeps_the_mapped_error_and_its_cause() -> None:
    pipeline = _pipeline(FakeClock(), retries=3)
    lost = ClientConnectionError("reset", service_name="svc", method="GET", endpoint="x")
    lost.__cause__ = OSError("reset by peer")
    closed = ClientClosedError(service_name="svc", method="GET", endpoint="x")
    with pytest.raises(ClientClosedError) as info:
        await _started(pipeline, Recorded(lost, mapped=closed))
    assert info.value is closed
    assert isinstance(info.value.__cause__, OSError)
    assert pipeline.breaker.fail_counter == 0  # neutral: ours
    assert pipeline.bulkhead.in_flight == 0


@pytest.mark.parametrize("run", ["execute", "start"])
async def test_a_cancelled_bare_send_frees_its_slot_is_told_and_not_counted(run: str) -> None:
    """Through execute's fast path or start's: the cancellation goes on, nothing is counted."""
    pipeline = _pipeline(FakeClock(), retries=3)
    attempt = Recorded("hang")
    task = asyncio.ensure_future((_run if run == "execute" else _started)(pipeline, attempt))
    for _ in range(3):
        await asyncio.sleep(0)
    assert pipeline.bulkhead.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempt.log == ["send", "failed:CancelledError"]
    assert pipeline.bulkhead.in_flight == 0
    assert pipeline.breaker.fail_counter == 0


async def test_retries_keep_the_attempt_timeout_the_call_started_with() -> None:
    """A reconfigure between the first attempt and its retry does not change the call's timeout."""
    pipeline = _pipeline(FakeClock(), retries=1)
    attempt = Recorded(_server_error(), "ok")
    real_send = attempt.send

    def send(timeout: float) -> Any:
        pipeline.attempt_timeout = 0.5  # reconfigured while the first attempt runs
        return real_send(timeout)

    attempt.send = send  # type: ignore[method-assign]
    assert await _started(pipeline, attempt) == "ok"
    assert attempt.timeouts == [5.0, 5.0]


@pytest.mark.parametrize(
    "case",
    [
        "not bare",
        "rate limit",
        "shared rate limit",
        "hedging",
        "adaptive",
        "timed breaker",
        "open breaker",
        "no time",
        "bulkhead full",
    ],
)
async def test_start_leaves_to_execute_whatever_needs_its_frame(case: str) -> None:
    clock = FakeClock()
    by_case: dict[str, dict[str, Any]] = {
        "rate limit": {"rate_limiter": RateLimiter(rate=100.0, burst=10, clock=clock)},
        "shared rate limit": {"shared_limiter": _NoWaitLimiter()},
        "hedging": {"hedging": HedgingPolicy(delay_seconds=0.05)},
        "adaptive": {"adaptive": Gradient2Limit(initial_limit=4, min_limit=1, max_limit=4)},
    }
    policies = by_case.get(case, {})
    breaker: dict[str, Any] = {"window": CountWindow(size=10)} if case == "timed breaker" else {}
    pipeline = _pipeline(clock, policies=policies, **breaker)
    attempt = Recorded("ok", bare=case != "not bare")
    deadline = Deadline.never(clock)
    if case == "open breaker":
        pipeline.breaker.open()
    elif case == "no time":
        deadline = Deadline(clock, clock.now())
    elif case == "bulkhead full":
        for _ in range(4):
            assert pipeline.bulkhead.try_acquire()
    assert pipeline.start(attempt, CallRecord("svc", "GET", "x", "id"), deadline) is None
    assert attempt.log == []  # nothing sent, nothing taken
    assert pipeline.bulkhead.in_flight == (4 if case == "bulkhead full" else 0)


async def test_a_send_that_raises_before_its_awaitable_is_a_failed_attempt() -> None:
    """A send that raises at once (not from its coroutine) frees the slot and is told, as any failure."""
    pipeline = _pipeline(FakeClock(), retries=0)
    attempt = Recorded()

    def send(timeout: float) -> Any:
        attempt.log.append("send")
        raise _server_error()

    attempt.send = send  # type: ignore[method-assign]
    with pytest.raises(ServerError):
        await _started(pipeline, attempt)
    assert attempt.log == ["send", "failed:ServerError"]
    assert pipeline.bulkhead.in_flight == 0
    assert pipeline.breaker.fail_counter == 1


async def test_a_defect_in_the_first_attempt_is_raised_not_retried() -> None:
    pipeline = _pipeline(FakeClock(), retries=3)
    attempt = Recorded(ValueError("a bug of ours"), "never sent")
    with pytest.raises(ValueError, match="a bug of ours"):
        await _started(pipeline, attempt)
    assert attempt.log == ["send", "failed:ValueError"]
    assert attempt.queue == ["never sent"]
    assert pipeline.bulkhead.in_flight == 0
    assert pipeline.breaker.fail_counter == 0  # not the upstream's failure
