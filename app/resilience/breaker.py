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
        # restart the open period; only the live closed state may trip it.
        if breaker._state is self and breaker.fail_counter >= breaker.fail_max:
            breaker.open()


class _Open(CircuitOpenState):  # type: ignore[misc]
    def before_call(self, func: Any, *args: Any, **kwargs: Any) -> None:
        breaker: CircuitBreakerPolicy = self._breaker
        remaining = breaker.seconds_until_half_open()
        if remaining > 0:
            raise BreakerRejectedError("circuit breaker open", remaining)


class _HalfOpen(CircuitHalfOpenState):  # type: ignore[misc]
    def __init__(
        self, breaker: CircuitBreakerPolicy, prev_state: Any = None, notify: bool = False
    ) -> None:
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
    """A consecutive-failure breaker on a monotonic clock.

    Opens after ``failure_threshold`` consecutive failures, rejects for
    ``reset_timeout_seconds``, then admits at most ``half_open_max_calls`` trials: a
    successful trial closes it, a failed one reopens it. ``is_failure`` decides what
    counts (by default every exception).
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
    ) -> None:
        if failure_threshold < 1 or reset_timeout_seconds <= 0 or half_open_max_calls < 1:
            raise ValueError("breaker thresholds and timeouts must be positive")
        self._clock = clock
        # Re-entrant: state changes notify listeners, which may read the breaker again.
        self._lock = threading.RLock()
        self._state_listeners: list[StateListener] = []
        self.half_open_max_calls = half_open_max_calls
        self.reset_timeout_seconds = reset_timeout_seconds
        exclude = [lambda exc: not is_failure(exc)] if is_failure is not None else []
        super().__init__(
            fail_max=failure_threshold,
            timeout_duration=timedelta(seconds=reset_timeout_seconds),
            exclude=exclude,
            name=name,
        )
        self.add_listener(_ListenerBridge(self))

    # aiobreaker builds states from its own enum; these subclasses carry the fixes.
    def _create_new_state(
        self, new_state: CircuitBreakerState, prev_state: Any = None, notify: bool = False
    ) -> Any:
        return _STATES[new_state](self, prev_state=prev_state, notify=notify)

    def open(self) -> None:
        """Open the circuit now (monotonic stamp, not aiobreaker's ``utcnow()``)."""
        with self._lock:
            self._state_storage.opened_at = self._clock.now()
            self.state = self._state_storage.state = CircuitBreakerState.OPEN

    def half_open(self) -> None:
        """Move an open breaker to half-open; a no-op if another caller already did."""
        with self._lock:
            if self._state_storage.state is CircuitBreakerState.OPEN:
                self.state = self._state_storage.state = CircuitBreakerState.HALF_OPEN

    def seconds_until_half_open(self) -> float:
        """Seconds until an open breaker admits a trial; 0 when not open or due."""
        if self._state_storage.state is not CircuitBreakerState.OPEN:
            return 0.0
        opened_at: float = self._state_storage.opened_at
        return max(0.0, opened_at + self.reset_timeout_seconds - self._clock.now())

    @property
    def opens_at(self) -> datetime | None:
        """Wall-clock time of the next half-open, derived from the monotonic reading."""
        remaining = self.seconds_until_half_open()
        return datetime.now(UTC) + timedelta(seconds=remaining) if remaining else None

    @property
    def time_until_open(self) -> timedelta | None:
        """Time until half-open, or None when it is not open or already due."""
        remaining = self.seconds_until_half_open()
        return timedelta(seconds=remaining) if remaining else None

    @property
    def state_name(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker that is due reads half_open)."""
        state = self._state_storage.state
        if state is CircuitBreakerState.OPEN and self.seconds_until_half_open() == 0:
            return "half_open"
        return _NAMES[state]

    def call_through(self, func: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """Run ``func(*args)`` under the breaker; raises ``BreakerRejectedError`` if refused."""
        result: Awaitable[T] = self.state.call_async(func, *args)
        return result

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(breaker, old, new)`` on every state change."""
        self._state_listeners.append(listener)

    def __repr__(self) -> str:
        return (
            f"CircuitBreakerPolicy(name={self.name!r}, state={self.state_name!r}, "
            f"failure_threshold={self.fail_max}, reset_timeout_seconds="
            f"{self.reset_timeout_seconds}, half_open_max_calls={self.half_open_max_calls})"
        )
