"""A bare Attempt: the fused fast path sends it without its wrapper, and tells it how the send ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.errors import ClientClosedError, ClientConnectionError, ServerError
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead
from app.resilience.deadline import Deadline
from app.resilience.pipeline import Attempt, CallRecord, Pipeline, is_breaker_failure, is_breaker_neutral
from app.resilience.retry import RetryPolicy
from app.resilience.window import CountWindow
from tests.support.manual_clock import ManualClock


class Recorded(Attempt[str]):
    """Sends ``outcomes`` in turn (a value, or an error to raise); notes which way each went."""

    def __init__(self, *outcomes: Any, bare: bool = True, mapped: BaseException | None = None) -> None:
        self.outcomes = list(outcomes)
        self.bare = bare
        self.mapped = mapped  # what failed() makes of an error, when set
        self.log: list[str] = []

    async def _next(self) -> str:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.Event().wait()
        return str(outcome)

    def send(self, timeout: float) -> Any:
        self.log.append("send")
        return self._next()

    async def __call__(self, timeout: float) -> str:
        self.log.append("whole")
        return await self._next()

    def answered(self) -> None:
        self.log.append("answered")

    def failed(self, error: BaseException) -> BaseException:
        self.log.append(f"failed:{type(error).__name__}")
        return self.mapped if self.mapped is not None else error


def _pipeline(clock: ManualClock, **breaker: Any) -> Pipeline:
    return Pipeline(
        bulkhead=Bulkhead(max_concurrent=4, max_waiting=0),
        breaker=CircuitBreakerPolicy(
            failure_threshold=5,
            clock=clock,
            is_failure=is_breaker_failure,
            is_neutral=is_breaker_neutral,  # as the clients' breakers: our own close is neutral
            **breaker,
        ),
        retry=RetryPolicy(max_retries=0, base_delay=0.1, max_delay=1.0, jitter=False),
        attempt_timeout=5.0,
        clock=clock,
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


async def test_a_cancelled_bare_send_is_told_and_not_counted() -> None:
    pipeline = _pipeline(ManualClock())
    attempt = Recorded("hang")
    task = asyncio.ensure_future(_run(pipeline, attempt))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempt.log == ["send", "failed:CancelledError"]
    assert pipeline.breaker.fail_counter == 0
    assert pipeline.bulkhead.in_flight == 0


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
