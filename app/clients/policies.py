"""Builds each resilience policy from a ClientConfig; the container and the client share these."""

from __future__ import annotations

from app.clients.config import ClientConfig
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.pipeline import is_breaker_failure
from app.resilience.retry import RetryPolicy

__all__ = ["breaker_from_config", "bulkhead_from_config", "retry_from_config"]


def breaker_from_config(config: ClientConfig, clock: Clock = MONOTONIC) -> CircuitBreakerPolicy:
    """The client's circuit breaker, counting what ``is_breaker_failure`` counts."""
    return CircuitBreakerPolicy(
        failure_threshold=config.circuit_breaker_failure_threshold,
        reset_timeout_seconds=config.circuit_breaker_reset_timeout_seconds,
        half_open_max_calls=config.circuit_breaker_half_open_max_calls,
        is_failure=is_breaker_failure,
        clock=clock,
        name=config.service_name,
    )


def bulkhead_from_config(config: ClientConfig) -> Bulkhead:
    """The client's bulkhead."""
    return Bulkhead(config.bulkhead_max_concurrent, config.bulkhead_max_waiting)


def retry_from_config(config: ClientConfig) -> RetryPolicy:
    """The client's retry policy."""
    return RetryPolicy(
        max_retries=config.max_retries,
        base_delay=config.retry_base_delay,
        max_delay=config.retry_max_delay,
        backoff_factor=config.retry_backoff_factor,
        jitter=config.retry_jitter,
        retry_on_status=config.retry_on_status,
    )
