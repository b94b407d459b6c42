"""Circuit breaker: aiobreaker's state machine on a monotonic clock, with a bounded half-open.

aiobreaker 1.2.0 has defects that this module wraps rather than leaks:

* it stamps ``opened_at`` with ``datetime.utcnow()`` and compares it with
  ``datetime.now()`` in ``opens_at``, so outside UTC the time to half-open is off by
  the zone offset, and wall-clock jumps move it;
* its half-open state lets every concurrent call through, not one trial;
* the call that trips the breaker raises ``CircuitBreakerError`` instead of its own
  error, and ``CircuitBreakerError`` would reach callers.

Here the states are subclasses of aiobreaker's, ``opened_at`` is a reading of the
injected monotonic clock, half-open admits at most ``half_open_max_calls`` trials, and a
tripping call re-raises its own error. A rejection raises :class:`BreakerRejectedError`, which the
pipeline turns into ``CircuitBreakerOpenError``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerListener, CircuitBreakerState
from aiobreaker.state import (
    CircuitBreakerError,
    CircuitClosedState,
    CircuitHalfOpenState,
    CircuitOpenState,
)

from app.resilience.clock import MONOTONIC, Clock
from app.resilience.window import OutcomeWindow

__all__ = ["BreakerRejectedError", "BreakerState", "CircuitBreakerPolicy", "StateListener"]

T = TypeVar("T")

BreakerState = CircuitBreakerState
StateListener = Callable[["CircuitBreakerPolicy", str, str], None]


class BreakerRejectedError(CircuitBreakerError):  # type: ignore[misc]
    """The breaker rejected a call; ``retry_after`` is the time to half-open, in seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, None)
        self.retry_after = retry_after


class _Closed(CircuitClosedState):  # type: ignore[misc]
    def on_failure(self, exception: Exception) -> None:
        breaker: CircuitBreakerPolicy = self._breaker
        # A late failure from a call that began before the breaker opened must not
        # restart the open period; only the live closed state may trip it. In
        # failure-rate mode the window decides, in CircuitBreakerPolicy._record.
        if breaker.window is None and breaker._state is self and breaker.fail_counter >= breaker.fail_max:
            breaker.open()


class _Open(CircuitOpenState):  # type: ignore[misc]
    def before_call(self, func: Any, *args: Any, **kwargs: Any) -> None:
        breaker: CircuitBreakerPolicy = self._breaker
        remaining = breaker.seconds_until_half_open()
        if remaining > 0:
            if breaker.isolated:
                raise BreakerRejectedError("circuit breaker isolated", None)
            raise BreakerRejectedError("circuit breaker open", remaining)


class _HalfOpen(CircuitHalfOpenState):  # type: ignore[misc]
    def __init__(self, breaker: CircuitBreakerPolicy, prev_state: Any = None, notify: bool = False) -> None:
        super().__init__(breaker, prev_state=prev_state, notify=notify)
        self.trials = 0

    async def call_async(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        breaker: CircuitBreakerPolicy = self._breaker
        with breaker._lock:
            if self.trials >= breaker.half_open_max_calls:
                raise BreakerRejectedError("circuit breaker half-open: trial calls in flight", None)
            self.trials += 1
        try:
            result: T = await super().call_async(func, *args, **kwargs)
        finally:
            # Released even on cancellation, which aiobreaker does not see.
            self.trials -= 1
        return result

    def on_failure(self, exception: Exception) -> None:
        if self._breaker._state is self:
            self._breaker.open()

    def on_success(self) -> None:
        if self._breaker._state is self:
            self._breaker.close()


_STATES: dict[CircuitBreakerState, type[Any]] = {
    CircuitBreakerState.CLOSED: _Closed,
    CircuitBreakerState.OPEN: _Open,
    CircuitBreakerState.HALF_OPEN: _HalfOpen,
}

_NAMES = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}


class _ListenerBridge(CircuitBreakerListener):  # type: ignore[misc]
    """Turns aiobreaker's state-change events into ``(breaker, old, new)`` callbacks."""

    def __init__(self, owner: CircuitBreakerPolicy) -> None:
        self._owner = owner

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        before = _NAMES[old.state] if old is not None else "closed"
        after = _NAMES[new.state]
        for listener in tuple(self._owner._state_listeners):
            listener(self._owner, before, after)


class CircuitBreakerPolicy(CircuitBreaker):  # type: ignore[misc]
    """A circuit breaker on a monotonic clock, in one of two modes.

    * ``consecutive`` (no ``window``): opens after ``failure_threshold`` consecutive
      failures, as aiobreaker does.
    * ``failure_rate`` (a ``window``): opens when failures / calls reaches
      ``failure_rate`` over the window, once it holds ``minimum_calls``; and, with a
      ``slow_call_threshold``, when slow calls / calls reaches ``slow_call_rate``
      (resilience4j's rules).

    Open, it rejects for the break duration, then admits at most
    ``half_open_max_calls`` trials: a successful trial closes it, a failed one reopens
    it. The break duration is ``reset_timeout_seconds``, multiplied by
    ``backoff_factor`` for each consecutive opening up to ``max_reset_timeout_seconds``,
    less up to ``reset_jitter`` of it at random (Envoy's ejection time). ``isolate()``
    holds it open until ``reset()``. ``is_failure`` decides what counts as a failure.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_seconds: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Clock = MONOTONIC,
        name: str = "",
        window: OutcomeWindow | None = None,
        failure_rate: float = 0.5,
        minimum_calls: int = 20,
        slow_call_threshold: float | None = None,
        slow_call_rate: float = 1.0,
        backoff_factor: float = 1.0,
        max_reset_timeout_seconds: float = 300.0,
        reset_jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_seconds <= 0 or half_open_max_calls < 1:
            raise ValueError("breaker thresholds and timeouts must be positive")
        if not (0 < failure_rate <= 1 and 0 < slow_call_rate <= 1 and backoff_factor >= 1):
            raise ValueError("breaker rates must be in (0, 1] and backoff_factor >= 1")
        self._clock = clock
        # Re-entrant: state changes notify listeners, which may read the breaker again.
        self._lock = threading.RLock()
        self._state_listeners: list[StateListener] = []
        self._is_failure = is_failure or (lambda exc: True)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.half_open_max_calls = half_open_max_calls
        self.reset_timeout_seconds = reset_timeout_seconds
        self.window = window
        self.failure_rate = failure_rate
        self.minimum_calls = minimum_calls
        self.slow_call_threshold = slow_call_threshold
        self.slow_call_rate = slow_call_rate
        self.backoff_factor = backoff_factor
        self.max_reset_timeout_seconds = max(max_reset_timeout_seconds, reset_timeout_seconds)
        self.reset_jitter = reset_jitter
        self.isolated = False
        self.openings = 0  # consecutive openings since the last close
        self.open_for = reset_timeout_seconds  # this opening's break duration
        super().__init__(
            fail_max=failure_threshold,
            timeout_duration=timedelta(seconds=reset_timeout_seconds),
            exclude=[lambda exc: not self._is_failure(exc)],
            name=name,
        )
        self.add_listener(_ListenerBridge(self))

    # aiobreaker builds states from its own enum; these subclasses carry the fixes.
    def _create_new_state(
        self, new_state: CircuitBreakerState, prev_state: Any = None, notify: bool = False
    ) -> Any:
        return _STATES[new_state](self, prev_state=prev_state, notify=notify)

    @property
    def mode(self) -> str:
        """``consecutive`` or ``failure_rate``."""
        return "consecutive" if self.window is None else "failure_rate"

    def open(self) -> None:
        """Open the circuit now (monotonic stamp, not aiobreaker's ``utcnow()``)."""
        with self._lock:
            self.openings += 1
            duration = min(
                self.max_reset_timeout_seconds,
                self.reset_timeout_seconds * self.backoff_factor ** (self.openings - 1),
            )
            if self.reset_jitter:
                duration *= 1 - self.reset_jitter * self._rng.random()
            self.open_for = duration
            self._state_storage.opened_at = self._clock.now()
            self.state = self._state_storage.state = CircuitBreakerState.OPEN

    def close(self) -> None:
        """Close the circuit; the break duration and the window start over."""
        with self._lock:
            self.openings = 0
            if self.window is not None:
                self.window.clear()
            super().close()

    def isolate(self) -> None:
        """Hold the breaker open, rejecting every call, until ``reset()``."""
        with self._lock:
            self.isolated = True
            self.open()

    def reset(self) -> None:
        """Close the breaker and forget its history (also ends an ``isolate()``)."""
        with self._lock:
            self.isolated = False
            self._state_storage.reset_counter()
            self.close()

    def half_open(self) -> None:
        """Move an open breaker to half-open; a no-op if another caller already did."""
        with self._lock:
            if self._state_storage.state is CircuitBreakerState.OPEN:
                self.state = self._state_storage.state = CircuitBreakerState.HALF_OPEN

    def seconds_until_half_open(self) -> float:
        """Seconds until an open breaker admits a trial; 0 when not open or due; inf isolated."""
        if self._state_storage.state is not CircuitBreakerState.OPEN:
            return 0.0
        if self.isolated:
            return math.inf
        opened_at: float = self._state_storage.opened_at
        return max(0.0, opened_at + self.open_for - self._clock.now())

    @property
    def opens_at(self) -> datetime | None:
        """Wall-clock time of the next half-open, derived from the monotonic reading."""
        remaining = self.seconds_until_half_open()
        if not remaining or math.isinf(remaining):
            return None
        return datetime.now(UTC) + timedelta(seconds=remaining)

    @property
    def time_until_open(self) -> timedelta | None:
        """Time until half-open, or None when it is not open, already due, or isolated."""
        remaining = self.seconds_until_half_open()
        if not remaining or math.isinf(remaining):
            return None
        return timedelta(seconds=remaining)

    @property
    def state_name(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker that is due reads half_open)."""
        state = self._state_storage.state
        if state is CircuitBreakerState.OPEN and self.seconds_until_half_open() == 0:
            return "half_open"
        return _NAMES[state]

    def call_through(self, func: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """Run ``func(*args)`` under the breaker; raises ``BreakerRejectedError`` if refused."""
        state = self.state
        if self.window is not None and type(state) is _Closed:
            return self._measured(state, func, *args)
        result: Awaitable[T] = state.call_async(func, *args)
        return result

    async def _measured(self, state: Any, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A closed-state call in failure-rate mode: its outcome and duration go to the window."""
        started = self._clock.now()
        try:
            result: T = await state.call_async(func, *args)
        except Exception as exc:
            self._record(self._is_failure(exc), started)
            raise
        self._record(False, started)
        return result

    def _record(self, failure: bool, started: float) -> None:
        assert self.window is not None  # noqa: S101 - only called in failure-rate mode
        threshold = self.slow_call_threshold
        slow = threshold is not None and self._clock.now() - started > threshold
        with self._lock:
            totals = self.window.record(failure=failure, slow=slow)
            if (
                self._state_storage.state is CircuitBreakerState.CLOSED
                and totals.calls >= self.minimum_calls
                and (
                    totals.failures >= self.failure_rate * totals.calls
                    or (threshold is not None and totals.slow >= self.slow_call_rate * totals.calls)
                )
            ):
                self.open()

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(breaker, old, new)`` on every state change."""
        self._state_listeners.append(listener)

    def __repr__(self) -> str:
        return (
            f"CircuitBreakerPolicy(name={self.name!r}, mode={self.mode!r}, state={self.state_name!r}, "
            f"failure_threshold={self.fail_max}, failure_rate={self.failure_rate}, "
            f"reset_timeout_seconds={self.reset_timeout_seconds}, "
            f"half_open_max_calls={self.half_open_max_calls})"
        )
