"""Resilience policies, one module each, and the pipeline that orders them."""

from app.resilience.breaker import (
    BREAKER_DEFAULTS,
    BreakerDefaults,
    BreakerRejectedError,
    CircuitBreakerPolicy,
)
from app.resilience.bulkhead import Bulkhead, BulkheadRejectedError
from app.resilience.clock import MONOTONIC, Clock, MonotonicClock
from app.resilience.deadline import Deadline
from app.resilience.pipeline import (
    Attempt,
    CallRecord,
    Pipeline,
    is_breaker_failure,
    is_breaker_neutral,
    raise_settled,
)
from app.resilience.retry import RetryPolicy, parse_retry_after

__all__ = [
    "Attempt",
    "BREAKER_DEFAULTS",
    "BreakerDefaults",
    "BreakerRejectedError",
    "Bulkhead",
    "BulkheadRejectedError",
    "CallRecord",
    "CircuitBreakerPolicy",
    "Clock",
    "Deadline",
    "MONOTONIC",
    "MonotonicClock",
    "Pipeline",
    "RetryPolicy",
    "is_breaker_failure",
    "is_breaker_neutral",
    "parse_retry_after",
    "raise_settled",
]
