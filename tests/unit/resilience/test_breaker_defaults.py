"""One source of truth for the breaker's defaults, and jitter that only spreads growing break durations."""

from __future__ import annotations

import dataclasses
import inspect
import random

import pytest

from app.clients.config import ClientConfig
from app.resilience import BREAKER_DEFAULTS, BreakerDefaults
from app.resilience.breaker import CircuitBreakerPolicy

#: BreakerDefaults field -> the ClientConfig field it is the default of.
CONFIG_FIELDS = {
    "failure_threshold": "circuit_breaker_failure_threshold",
    "reset_timeout_seconds": "circuit_breaker_reset_timeout_seconds",
    "half_open_max_calls": "circuit_breaker_half_open_max_calls",
    "failure_rate": "circuit_breaker_failure_rate",
    "minimum_calls": "circuit_breaker_minimum_calls",
    "slow_call_rate": "slow_call_rate_threshold",
    "backoff_factor": "circuit_breaker_backoff_factor",
    "max_reset_timeout_seconds": "circuit_breaker_max_reset_timeout_seconds",
    "reset_jitter": "circuit_breaker_reset_jitter",
}


class Boom(Exception):
    """A failure."""


async def fail() -> None:
    raise Boom


def test_the_seed_values() -> None:
    """DESIGN §5's seed values: 5 failures, 60 s; the rest as ClientConfig documents them."""
    assert dataclasses.asdict(BREAKER_DEFAULTS) == {
        "failure_threshold": 5,
        "reset_timeout_seconds": 60.0,
        "half_open_max_calls": 1,
        "failure_rate": 0.5,
        "minimum_calls": 20,
        "slow_call_rate": 1.0,
        "backoff_factor": 1.0,
        "max_reset_timeout_seconds": 300.0,
        "reset_jitter": 0.1,
    }
    assert "reset_jitter=0.1" in repr(BREAKER_DEFAULTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        BREAKER_DEFAULTS.reset_jitter = 0  # type: ignore[misc]


def test_the_policy_defaults_are_the_constants() -> None:
    """Each keyword of CircuitBreakerPolicy with a BreakerDefaults field defaults to it."""
    parameters = inspect.signature(CircuitBreakerPolicy).parameters
    for field in dataclasses.fields(BreakerDefaults):
        assert parameters[field.name].default == getattr(BREAKER_DEFAULTS, field.name), field.name


def test_client_config_defaults_are_the_constants() -> None:
    """ClientConfig's breaker fields default to the same values."""
    fields = ClientConfig.model_fields
    for name, config_name in CONFIG_FIELDS.items():
        assert fields[config_name].default == getattr(BREAKER_DEFAULTS, name), config_name


@pytest.mark.parametrize("seed", range(5))
async def test_a_fixed_break_duration_stays_exact_despite_the_default_jitter(clock, seed) -> None:
    """backoff_factor 1 with the default 10% jitter: every opening lasts exactly the reset timeout."""
    breaker = CircuitBreakerPolicy(failure_threshold=1, clock=clock, rng=random.Random(seed))
    assert breaker.reset_jitter == 0.1
    for _ in range(3):
        with pytest.raises(Boom):
            await breaker.call_through(fail)
        assert breaker.seconds_until_half_open() == 60.0
        clock.advance(60)


@pytest.mark.parametrize("seed", range(5))
async def test_a_growing_break_duration_gets_the_default_jitter(clock, seed) -> None:
    """backoff_factor 2: each opening lasts between 90% and 100% of its duration."""
    breaker = CircuitBreakerPolicy(
        failure_threshold=1,
        reset_timeout_seconds=10,
        clock=clock,
        backoff_factor=2.0,
        rng=random.Random(seed),
    )
    for expected in (10, 20, 40):
        with pytest.raises(Boom):
            await breaker.call_through(fail)
        assert 0.9 * expected <= breaker.open_for <= expected
        clock.advance(breaker.seconds_until_half_open())


def test_jitter_outside_its_range_is_refused() -> None:
    """A jitter of 1 or more could make a break duration zero or negative."""
    with pytest.raises(ValueError, match="reset_jitter"):
        CircuitBreakerPolicy(reset_jitter=1.0)
    with pytest.raises(ValueError, match="reset_jitter"):
        CircuitBreakerPolicy(reset_jitter=-0.1)
