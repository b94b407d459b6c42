"""The retry policy's decisions and waits, and backoff's wall-clock defect kept out."""

from __future__ import annotations

import datetime as dt
import email.utils
import types

import backoff
import pytest

from app.errors import (
    ClientConnectionError,
    ClientTimeoutError,
    ClientValidationError,
    RateLimitedError,
    ServerError,
)
from app.resilience.retry import RetryPolicy, parse_retry_after


def test_waits_follow_the_formula() -> None:
    """``min(max_delay, base * factor**(n-1))`` without jitter."""
    policy = RetryPolicy(base_delay=0.5, max_delay=5.0, backoff_factor=3.0, jitter=False)
    waits = policy.waits()
    assert [next(waits) for _ in range(5)] == [0.5, 1.5, 4.5, 5.0, 5.0]


def test_full_jitter_draws_below_the_backoff() -> None:
    """Full jitter draws each wait from [0, backoff]."""
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=True)
    waits = policy.waits()
    drawn = [next(waits) for _ in range(50)]
    caps = [min(8.0, 2.0**n) for n in range(50)]
    assert all(0 <= d <= c for d, c in zip(drawn, caps, strict=True))


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (ClientConnectionError(request_sent=False), False, True),
        (ClientConnectionError(request_sent=True), False, False),
        (ClientConnectionError(request_sent=True), True, True),
        (ClientTimeoutError(), True, True),
        (ClientTimeoutError(), False, False),
        (ServerError(status=503), True, True),
        (ServerError(status=500), True, False),
        (ServerError(status=503), False, False),
        (RateLimitedError(status=429), True, True),
        (ClientValidationError(status=422), True, False),
    ],
)
def test_what_is_retried(error, idempotent, expected) -> None:
    """Connection errors, timeouts and retry_on_status; only idempotent, but for unsent requests."""
    assert RetryPolicy().is_retryable(error, idempotent=idempotent) is expected


def test_retry_after_replaces_and_is_capped() -> None:
    """Retry-After on 429/503 replaces the computed wait, capped by max_delay; not on 502."""
    policy = RetryPolicy(max_delay=10.0)
    assert policy.wait_for(0.3, RateLimitedError(status=429, retry_after=4)) == 4
    assert policy.wait_for(0.3, ServerError(status=503, retry_after=60)) == 10.0
    assert policy.wait_for(0.3, ServerError(status=502, retry_after=4)) == 0.3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 12 ", 12.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_parse_retry_after_seconds(value, expected) -> None:
    """Delta-seconds parse; anything else is ignored."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP date is measured from the wall clock; past dates mean no wait."""
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(future, wall=lambda: now) == pytest.approx(30, abs=1)
    assert parse_retry_after(past, wall=lambda: now) == 0.0


def test_invalid_policy_is_refused() -> None:
    """Negative counts or a base over the cap are refused."""
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(base_delay=5, max_delay=1)


def test_backoff_max_time_uses_the_wall_clock(monkeypatch) -> None:
    """Pins backoff 2.2.1's defect: its max_time reads datetime.now(), so a wall-clock jump ends it.

    The pipeline uses only backoff's wait generators, never this decorator. If this starts
    failing, backoff moved to a monotonic clock.
    """
    calls = 0

    class Jumping(dt.datetime):
        offset = dt.timedelta(0)

        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return dt.datetime.now(tz) + cls.offset

    @backoff.on_exception(backoff.constant, ValueError, max_time=3600, interval=0, jitter=None)
    def flaky() -> None:
        nonlocal calls
        calls += 1
        Jumping.offset += dt.timedelta(hours=2)  # NTP step / manual clock change mid-retry
        raise ValueError

    # backoff's module reads `datetime.datetime.now()`; give it a wall clock the test moves.
    monkeypatch.setattr(backoff._sync, "datetime", types.SimpleNamespace(datetime=Jumping))
    with pytest.raises(ValueError):  # noqa: PT011 - the decorator re-raises the last error
        flaky()
    assert calls == 2  # an hour's budget, spent in two instant tries by a wall-clock jump
