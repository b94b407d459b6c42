"""Retry policy: which failures are retried, and how long to wait (backoff with jitter).

The wait sequence comes from the ``backoff`` library's ``expo`` generator and
``full_jitter``. Its decorators are not used: backoff 2.2.1 measures ``max_time`` with
``datetime.now()``, the wall clock, so a clock step (NTP, DST on naive time) stretches
or cuts the budget. The pipeline instead bounds retries by a deadline read from the
injected monotonic clock.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Iterator

import backoff

from app.errors import (
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    RateLimitedError,
    ServerError,
)

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "parse_retry_after"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: The cap on a parsed ``Retry-After`` when the caller gives none: one day. A value is
#: always finite, so nothing downstream meets ``inf`` or ``nan``.
MAX_RETRY_AFTER = 86_400.0

# delay-seconds is 1*DIGIT (RFC 9110 §10.2.3); a decimal fraction is tolerated. ASCII
# only: str.isdigit() and float() also take Arabic-Indic or superscript digits.
_SECONDS = re.compile(r"([0-9]+)(?:\.[0-9]+)?", re.ASCII)
# More integer digits than this is longer than any cap (and float() would say inf).
_MAX_DIGITS = 15
# An HTTP-date is short; anything much longer is not one, and is not parsed at all.
_MAX_DATE_LENGTH = 64


def parse_retry_after(
    value: str | None, wall: Callable[[], float] = time.time, *, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), or None.

    The result is None for anything unusable (negative, non-ASCII digits, garbage, an
    impossible date), else a finite number in ``[0, cap]``: hundreds of digits or a date
    in the year 9999 come back as ``cap``, never as ``inf`` or an ``OverflowError``.
    """
    if not value:
        return None
    value = value.strip()
    cap = min(max(0.0, cap), MAX_RETRY_AFTER)
    digits = _SECONDS.fullmatch(value)
    if digits:
        seconds = math.inf if len(digits.group(1)) > _MAX_DIGITS else float(value)
    elif len(value) <= _MAX_DATE_LENGTH:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                return None  # RFC 9110 dates are GMT; a zone-less one is not a valid HTTP-date
            # An HTTP-date is absolute wall time, so the wall clock is the right one here.
            seconds = when.timestamp() - wall()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # parsedate_to_datetime and datetime raise all of these on garbage
    else:
        return None
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), cap)


class RetryPolicy:
    """When to retry a failed attempt and how long to wait first.

    * Retried: connection errors, attempt timeouts, and statuses in ``retry_on_status``.
    * Only for idempotent calls (GET, PUT, DELETE, or ``idempotent=True``), except a
      connection that failed before the request was sent, which is safe for any method.
    * Wait before retry n: ``min(max_delay, base_delay * backoff_factor**(n-1))``, drawn
      uniformly from ``[0, that]`` when ``jitter`` is on (full jitter).
    * A ``Retry-After`` on a 429 or 503 replaces the computed wait, capped by ``max_delay``.
    """

    __slots__ = (
        "backoff_factor",
        "base_delay",
        "jitter",
        "max_delay",
        "max_retries",
        "retry_on_status",
    )

    def __init__(
        self,
        max_retries: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        backoff_factor: float = 2.0,
        *,
        jitter: bool = True,
        retry_on_status: frozenset[int] = frozenset({429, 502, 503, 504}),
    ) -> None:
        self.reconfigure(
            max_retries, base_delay, max_delay, backoff_factor, jitter=jitter, retry_on_status=retry_on_status
        )

    def reconfigure(
        self,
        max_retries: int,
        base_delay: float,
        max_delay: float,
        backoff_factor: float,
        *,
        jitter: bool,
        retry_on_status: frozenset[int],
    ) -> None:
        """Take new settings in place (the constructor's); a call already retrying keeps its own.

        The pipeline copies the policy at a call's first failure, so the call's retries
        all follow one version of it.
        """
        if max_retries < 0 or base_delay < 0 or max_delay < base_delay or backoff_factor < 1:
            raise ValueError("invalid retry policy")
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.backoff_factor = backoff_factor
        self.jitter = jitter
        self.retry_on_status = retry_on_status

    def is_retryable(self, error: ClientError, *, idempotent: bool) -> bool:
        """True when a retry of this failed attempt is safe and may help."""
        if isinstance(error, ClientClosedError):
            return False  # the client is shutting down: another attempt could only fail
        if isinstance(error, ClientConnectionError):
            return idempotent or not error.request_sent
        if isinstance(error, ClientTimeoutError):
            return idempotent
        if isinstance(error, ServerError | RateLimitedError) or error.status is not None:
            return idempotent and error.status in self.retry_on_status
        return False

    def waits(self) -> Iterator[float]:
        """The computed (jittered) waits before retries 1, 2, 3 and on."""
        gen = backoff.expo(base=self.backoff_factor, factor=self.base_delay, max_value=self.max_delay)
        next(gen)  # backoff's generators are primed with one next() before the first value
        for value in gen:
            yield backoff.full_jitter(value) if self.jitter else value

    def wait_for(self, computed: float, error: ClientError) -> float:
        """The wait before the next attempt: the server's ``Retry-After`` wins when given."""
        after = error.retry_after
        # One instance's Retry-After keeps that instance avoided; the retry goes to another
        # instance and need not wait for it.
        if error.instance_local:
            return computed
        # "0 <= after" is False for nan, so a value that is not a number falls through.
        if after is not None and error.status in (429, 503) and after >= 0:
            return min(after, self.max_delay)
        return computed

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_retries={self.max_retries}, base_delay={self.base_delay}, "
            f"max_delay={self.max_delay}, backoff_factor={self.backoff_factor}, "
            f"jitter={self.jitter}, retry_on_status={sorted(self.retry_on_status)})"
        )
