"""The pipeline: bulkhead, deadline, retry, breaker and attempt timeout, in that order.

The order is .NET's standard resilience handler's: the bulkhead wait counts against
the deadline; the breaker sees every attempt, so an open breaker cuts retries short;
no retry sleeps past the deadline; and each attempt gets
``min(attempt timeout, remaining deadline)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.clients.exceptions import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    retry_exhausted,
)
from app.resilience.breaker import BreakerRejectedError, CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead, BulkheadRejectedError
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.retry import RetryPolicy

__all__ = ["CallRecord", "Pipeline", "is_breaker_failure"]

T = TypeVar("T")


def is_breaker_failure(error: BaseException) -> bool:
    """What the breaker counts: connection errors, timeouts, 5xx and 429.

    A 4xx caused by the caller's own request says nothing about the upstream's health.
    """
    if isinstance(error, ClientConnectionError | ClientTimeoutError):
        return True
    if isinstance(error, ClientError):
        status = error.status
        return status is not None and (status >= 500 or status == 429)
    # Anything else escaping an attempt is a defect on our side, not the upstream's.
    return False


class CallRecord:
    """What one logical call did, filled in as it runs; read by logging and metrics."""

    __slots__ = ("attempts", "endpoint", "method", "request_id", "retry_waits", "service", "status")

    def __init__(self, service: str, method: str, endpoint: str, request_id: str) -> None:
        self.service = service
        self.method = method
        self.endpoint = endpoint
        self.request_id = request_id
        self.attempts = 0
        self.status: int | None = None
        self.retry_waits = 0.0


class Pipeline:
    """Runs one logical call through the policies of one client."""

    __slots__ = ("attempt_timeout", "breaker", "bulkhead", "clock", "retry")

    def __init__(
        self,
        *,
        bulkhead: Bulkhead,
        breaker: CircuitBreakerPolicy,
        retry: RetryPolicy,
        attempt_timeout: float,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.bulkhead = bulkhead
        self.breaker = breaker
        self.retry = retry
        self.attempt_timeout = attempt_timeout
        self.clock = clock

    def _error(
        self, cls: type[ClientError], message: str, record: CallRecord, **kw: object
    ) -> ClientError:
        return cls(
            message,
            service_name=record.service,
            method=record.method,
            endpoint=record.endpoint,
            attempts=record.attempts,
            **kw,  # type: ignore[arg-type]
        )

    async def execute(
        self,
        attempt: Callable[[float], Awaitable[T]],
        record: CallRecord,
        deadline: Deadline,
        *,
        idempotent: bool,
    ) -> T:
        """Run ``attempt(timeout)`` until it succeeds or the policies give up."""
        bulkhead = self.bulkhead
        if not bulkhead.try_acquire():
            try:
                await bulkhead.acquire(deadline.remaining())
            except BulkheadRejectedError:
                raise self._error(BulkheadFullError, "bulkhead full", record) from None
            except TimeoutError as exc:
                raise self._error(
                    ClientTimeoutError, "deadline exceeded waiting for a bulkhead slot", record
                ) from exc
        try:
            return await self._attempts(attempt, record, deadline, idempotent)
        finally:
            bulkhead.release()

    async def _attempts(
        self,
        attempt: Callable[[float], Awaitable[T]],
        record: CallRecord,
        deadline: Deadline,
        idempotent: bool,
    ) -> T:
        retry = self.retry
        breaker = self.breaker
        waits = None
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise self._error(ClientTimeoutError, "deadline exceeded", record)
            record.attempts += 1
            try:
                return await breaker.call_through(attempt, min(self.attempt_timeout, remaining))
            except BreakerRejectedError as exc:
                record.attempts -= 1  # nothing was sent
                raise self._error(
                    CircuitBreakerOpenError, exc.message, record, retry_after=exc.retry_after
                ) from None
            except ClientError as error:
                error.attempts = record.attempts
                wait = None
                if (
                    record.attempts <= retry.max_retries
                    and retry.is_retryable(error, idempotent=idempotent)
                    # An open breaker cuts retries short: the next try would only be refused.
                    and breaker.seconds_until_half_open() == 0
                ):
                    if waits is None:
                        waits = retry.waits()
                    wait = retry.wait_for(next(waits), error)
                    if wait >= deadline.remaining():
                        wait = None  # the sleep would end past the deadline: fail now instead
                if wait is None:
                    if record.attempts > 1:
                        raise retry_exhausted(error) from error
                    raise
                record.retry_waits += wait
                await self.clock.sleep(wait)
