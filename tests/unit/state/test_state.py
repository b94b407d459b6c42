"""Shared state without a Redis: its settings, its redaction, and its fallback when Redis is unavailable."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.clients.testing import FakeClock
from app.state import GlobalRateLimiter, SharedState, SharedStateSettings, redact_url


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deadline_seconds", 0),
        ("deadline_seconds", float("nan")),
        ("breaker_failure_threshold", 0),
        ("key_prefix", ""),
    ],
)
def test_settings_refuse_nonsense(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SharedStateSettings(url="redis://127.0.0.1:6379/0", **{field: value})  # type: ignore[arg-type]


def test_settings_refuse_other_schemes() -> None:
    with pytest.raises(ValueError, match="redis://"):
        SharedStateSettings(url="http://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw-one@127.0.0.1:6379/0",
        "redis://user:pw-one@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=pw-one",
        "unix:///run/redis.sock?password=pw-one",
    ],
)
def test_no_password_reaches_a_log_or_the_status(url: str) -> None:
    assert "pw-one" not in redact_url(url)
    state = SharedState(SharedStateSettings(url=url), registry=CollectorRegistry())
    assert "pw-one" not in repr(state)
    assert "pw-one" not in repr(state.settings)
    assert "pw-one" not in repr(state.status())


async def test_a_global_limit_without_redis_falls_back_by_failure_mode() -> None:
    clock = FakeClock()
    url = "redis://127.0.0.1:1/0"
    local = SharedState(SharedStateSettings(url=url), clock=clock, registry=CollectorRegistry())
    limiter = GlobalRateLimiter(local, "k", rate=10, burst=4, mode="fail", clock=clock)
    local._replicas = 2  # two replicas seen: this one's share is 5/s with bursts of 2
    assert [(await limiter.reserve_slot(1.0))[0] for _ in range(2)] == [0.0, 0.0]
    refused, _ = await limiter.reserve_slot(1.0)
    assert refused == pytest.approx(-0.2)  # 1 / (10 / 2)
    opened = SharedState(SharedStateSettings(url=url, failure_mode="open"), registry=CollectorRegistry())
    assert (await GlobalRateLimiter(opened, "k", rate=1).reserve_slot(1.0))[0] == 0.0
    closed = SharedState(SharedStateSettings(url=url, failure_mode="closed"), registry=CollectorRegistry())
    assert (await GlobalRateLimiter(closed, "k", rate=1).reserve_slot(1.0))[0] < 0
