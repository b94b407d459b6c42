"""The aiobreaker adapter: its breaker and state subclasses, deferring every decision to an owner.

aiobreaker 1.2.0 has defects that this module wraps rather than leaks:

* it stamps ``opened_at`` with ``datetime.utcnow()`` and compares it with
  ``datetime.now()`` in ``opens_at``, so outside UTC the time to half-open is off by
  the zone offset, and wall-clock jumps move it;
* its half-open state lets every concurrent call through, not one trial;
* the call that trips the breaker raises ``CircuitBreakerError`` instead of its own
  error, and ``CircuitBreakerError`` would reach callers;
* an error it is told to exclude counts as a success: it resets the count and closes a
  half-open breaker. Right for a caller's 4xx (the upstream answered), wrong for an
  outcome that says nothing about the upstream (our own shutdown);
* importing it imports redis (``aiobreaker.storage.redis`` checks for it at import), and
  redis in turn OpenTelemetry's metrics SDK and cryptography: about 9 MB of every
  process's memory, for a storage this project never uses (replicas share a breaker
  through ``app.state``). That storage's module is stood in for by one without redis
  (``_stand_in_for_redis_storage``), whose ``CircuitRedisStorage`` raises ImportError;
  redis is imported only where shared state is on.

Here ``opened_at`` is whatever the owner stamps (a monotonic reading), half-open admits
at most ``half_open_max_calls`` trials, a tripping call re-raises its own error, and an
error is a failure, a success or neutral (no effect at all). When to open, how long to
stay open and whom to tell are the owner's (:class:`BreakerOwner`) decisions. A
rejection raises :class:`BreakerRejectedError`. aiobreaker ships no types: every
``type: ignore`` of the breaker lives in this module.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Literal, Protocol, TypeVar


class _NoRedisStorage:
    """Stands for aiobreaker's ``CircuitRedisStorage``, which this project does not load."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError(
            "aiobreaker's CircuitRedisStorage is not loaded here: replicas share a breaker "
            "through app.state (circuit_breaker_shared)"
        )


def _stand_in_for_redis_storage() -> None:
    """Before aiobreaker is imported: its Redis storage's module, without redis (see the module's docstring).

    The storage's module is stood in for in ``sys.modules`` by one that has no redis,
    so aiobreaker's package, imported below, takes that one. Nothing of redis's is touched: an import
    of redis on another thread meanwhile goes on unaffected. With redis imported already
    (shared state on), or aiobreaker, the real storage module is as cheap as the stand-in.
    """
    if "aiobreaker" in sys.modules or "redis" in sys.modules:
        return
    stand_in = ModuleType(
        _REDIS_STORAGE, "aiobreaker's Redis storage, not loaded (app.resilience.breaker_engine)."
    )
    stand_in.__dict__.update(HAS_REDIS_SUPPORT=False, CircuitRedisStorage=_NoRedisStorage)
    sys.modules.setdefault(_REDIS_STORAGE, stand_in)


_REDIS_STORAGE = "aiobreaker.storage.redis"
_stand_in_for_redis_storage()

from aiobreaker import CircuitBreaker, CircuitBreakerState  # noqa: E402 - after the stand-in above
from aiobreaker.state import (  # noqa: E402
    CircuitBreakerBaseState,
    CircuitBreakerError,
    CircuitClosedState,
    CircuitHalfOpenState,
    CircuitOpenState,
)

__all__ = [
    "BreakerEngine",
    "BreakerEngineClosed",
    "BreakerOutcomes",
    "BreakerOwner",
    "BreakerRejectedError",
    "BreakerState",
    "StateName",
]

T = TypeVar("T")

BreakerState = CircuitBreakerState
StateName = Literal["closed", "open", "half_open"]


class BreakerRejectedError(CircuitBreakerError):  # type: ignore[misc]
    """The breaker rejected a call; ``retry_after`` is the time to half-open, in seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, None)
        self.retry_after = retry_after


class BreakerOwner(Protocol):
    """The decisions the engine leaves to the policy that owns it."""

    def open(self) -> None:
        """Open now: stamp the time and choose the break duration."""
        ...

    def close(self) -> None:
        """Close now, forgetting the trip rule's history."""
        ...

    def rejection(self) -> BreakerRejectedError | None:
        """The error refusing a call while open, or None once a trial is due."""
        ...

    def failed_while_closed(self, consecutive: int) -> None:
        """A counted failure in the live closed state, the ``consecutive``-th in a row."""
        ...

    def state_changed(self, old: StateName, new: StateName) -> None:
        """The state moved from ``old`` to ``new``."""
        ...


class BreakerOutcomes(Protocol):
    """A state's outcome handling, for an attempt awaited outside aiobreaker's wrapper."""

    def failed(self, exception: Exception) -> None:
        """The attempt raised ``exception``: counted as a failure, a success, or neither."""
        ...

    def succeeded(self) -> None:
        """The attempt was answered."""
        ...


_NAMES: dict[CircuitBreakerState, StateName] = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}


class _Outcomes(CircuitBreakerBaseState):  # type: ignore[misc]
    """Every state's outcome handling: failure, success, or neutral; no aiobreaker listeners."""

    def _handle_error(self, func: Any, exception: Exception) -> None:
        self.failed(exception)
        try:
            raise exception
        finally:
            del exception  # its traceback holds this frame: no reference cycle through it

    def _handle_success(self) -> None:
        self.succeeded()

    # The outcome handling itself, shared by aiobreaker's call path (above) and the
    # policy's closed fast path, which awaits the attempt without aiobreaker's wrapper.
    def failed(self, exception: Exception) -> None:
        """An attempt through this state raised ``exception``: a failure, a success or neutral."""
        breaker: BreakerEngine = self._breaker
        neutral = breaker.is_neutral
        if neutral is not None and neutral(exception):
            # Says nothing about the upstream: the count, the state and the window stay
            # as they were; a half-open trial slot is freed by the caller's ``finally``.
            return
        if breaker.is_failure(exception):
            breaker._state_storage.increment_counter()
            self.on_failure(exception)
        else:
            self.succeeded()

    def succeeded(self) -> None:
        """An attempt through this state was answered."""
        self._breaker._state_storage.reset_counter()
        self.on_success()


class BreakerEngineClosed(_Outcomes, CircuitClosedState):  # type: ignore[misc]
    """The engine's closed state, whose outcomes the fast path reports (see ``Breaker.fast_state``)."""

    def succeeded(self) -> None:
        """An attempt was answered: the failures in a row count from 0 again.

        aiobreaker's ``on_success`` does nothing while closed: not called, a frame fewer
        on the most common call. Nor is the storage's ``reset_counter()`` while its
        counter is 0 already: the engine's memory storage (the one it ever has), read
        as its own method does.
        """
        storage = self._breaker._state_storage
        if storage._fail_counter:
            storage.reset_counter()

    def on_failure(self, exception: Exception) -> None:
        breaker: BreakerEngine = self._breaker
        # A late failure from a call that began before the breaker opened must not
        # restart the open period; only the live closed state may trip it.
        if breaker._state is self:
            breaker.owner.failed_while_closed(breaker._state_storage.counter)


class _Open(_Outcomes, CircuitOpenState):  # type: ignore[misc]
    def before_call(self, func: Any, *args: Any, **kwargs: Any) -> None:
        rejection = self._breaker.owner.rejection()
        if rejection is not None:
            try:
                raise rejection
            finally:
                del rejection  # as in _handle_error


class _HalfOpen(_Outcomes, CircuitHalfOpenState):  # type: ignore[misc]
    def __init__(self, breaker: BreakerEngine, prev_state: Any = None, notify: bool = False) -> None:
        super().__init__(breaker, prev_state=prev_state, notify=notify)
        self.trials = 0

    async def call_async(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        breaker: BreakerEngine = self._breaker
        with breaker.lock:
            if self.trials >= breaker.half_open_max_calls:
                raise BreakerRejectedError("circuit breaker half-open: trial calls in flight", None)
            self.trials += 1
        try:
            result: T = await super().call_async(func, *args, **kwargs)
        finally:
            # Released even on cancellation, which aiobreaker does not see, and on a
            # neutral outcome, which leaves the breaker half-open for the next trial.
            self.trials -= 1
        return result

    def on_failure(self, exception: Exception) -> None:
        if self._breaker._state is self:
            self._breaker.owner.open()

    def on_success(self) -> None:
        if self._breaker._state is self:
            self._breaker.owner.close()


_STATES: dict[CircuitBreakerState, type[Any]] = {
    CircuitBreakerState.CLOSED: BreakerEngineClosed,
    CircuitBreakerState.OPEN: _Open,
    CircuitBreakerState.HALF_OPEN: _HalfOpen,
}


class BreakerEngine(CircuitBreaker):  # type: ignore[misc]
    """aiobreaker's state machine with the fixes above; the owner decides, the engine moves.

    ``is_failure`` and ``is_neutral`` classify an error (neutral first); anything else
    is a success. ``lock`` guards transitions and the half-open trial count. ``phase``
    is the state's name and ``opened_at`` the stamp of the last opening.
    """

    def __init__(
        self,
        owner: BreakerOwner,
        *,
        is_failure: Callable[[BaseException], bool],
        is_neutral: Callable[[BaseException], bool] | None,
        half_open_max_calls: int,
        lock: threading.RLock,
        name: str,
    ) -> None:
        self.owner = owner
        self.is_failure = is_failure
        self.is_neutral = is_neutral
        self.half_open_max_calls = half_open_max_calls
        self.lock = lock
        #: The state's name, and the owner's stamp of the last opening: plain attributes,
        #: as the policy reads them on every attempt and every retry decision.
        self.phase: StateName = "closed"
        self.opened_at = 0.0
        # No aiobreaker listeners: state changes go to the owner, and the per-call
        # listener loops of the hot path stay empty.
        super().__init__(name=name)

    # aiobreaker builds states from its own enum; these subclasses carry the fixes.
    def _create_new_state(
        self, new_state: CircuitBreakerState, prev_state: Any = None, notify: bool = False
    ) -> Any:
        state = _STATES[new_state](self, prev_state=prev_state, notify=notify)
        name = _NAMES[new_state]
        if notify:
            self.owner.state_changed(_NAMES[prev_state.state] if prev_state is not None else "closed", name)
        self.phase = name
        return state

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """``func(*args)`` through the current state, which is read now, not when awaited."""
        # The storage is in memory and only this engine moves it, so the cached state is
        # always current: aiobreaker's ``state`` property need not re-check it per call.
        result: Awaitable[T] = self._state.call_async(func, *args)
        return result

    @property
    def fail_counter(self) -> int:
        """Counted failures in a row."""
        counter: int = self._state_storage.counter
        return counter

    def reset_counter(self) -> None:
        """Forget the failures in a row."""
        self._state_storage.reset_counter()

    def move_open(self, opened_at: float) -> None:
        """Enter the open state, stamped ``opened_at`` (the owner's clock, not ``utcnow()``)."""
        self.opened_at = opened_at
        self.state = self._state_storage.state = CircuitBreakerState.OPEN

    def move_closed(self) -> None:
        """Enter the closed state (which resets the count)."""
        self.state = self._state_storage.state = CircuitBreakerState.CLOSED

    def half_open(self) -> None:
        """Move an open breaker to half-open; a no-op if another caller already did."""
        with self.lock:
            if self._state_storage.state is CircuitBreakerState.OPEN:
                self.state = self._state_storage.state = CircuitBreakerState.HALF_OPEN

    # aiobreaker's own transitions, reached only through its states, go to the owner.
    def open(self) -> None:
        """Open through the owner, which stamps its clock and picks the break duration."""
        self.owner.open()

    def close(self) -> None:
        """Close through the owner, which also clears the trip rule's history."""
        self.owner.close()
