"""CircuitBreakerPolicy: the public breaker, with its defaults, manual control and time to half-open.

The state machine is aiobreaker's, adapted in :mod:`app.resilience.breaker_engine`;
when a closed breaker opens is a rule of :mod:`app.resilience.trip_rules`. This module
decides the rest: how long each opening lasts, on a monotonic clock; manual control
(``isolate``, ``reset``, ``open``, ``close``, ``half_open``); and who hears of state
changes. A rejection raises :class:`BreakerRejectedError`, which the pipeline turns into
``CircuitBreakerOpenError``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypedDict, TypeVar, Unpack, cast

from app.resilience.breaker_engine import (
    BreakerEngine,
    BreakerEngineClosed,
    BreakerOutcomes,
    BreakerRejectedError,
    BreakerState,
    StateName,
)
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.trip_rules import BreakerMode, ConsecutiveFailures, FailureRate, TripRule
from app.resilience.window import OutcomeWindow

__all__ = [
    "BREAKER_DEFAULTS",
    "BreakerDefaults",
    "BreakerOptions",
    "BreakerRejectedError",
    "BreakerState",
    "CircuitBreakerPolicy",
    "StateListener",
]

T = TypeVar("T")

StateListener = Callable[["CircuitBreakerPolicy", str, str], None]


@dataclass(frozen=True, slots=True)
class BreakerDefaults:
    """The breaker's defaults, DESIGN §5's seed values; ``ClientConfig``'s fields default to them."""

    failure_threshold: int = 5
    reset_timeout_seconds: float = 60.0
    half_open_max_calls: int = 1
    failure_rate: float = 0.5
    minimum_calls: int = 20
    slow_call_rate: float = 1.0
    backoff_factor: float = 1.0
    max_reset_timeout_seconds: float = 300.0
    reset_jitter: float = 0.1


BREAKER_DEFAULTS: Final = BreakerDefaults()

_D = BREAKER_DEFAULTS


class BreakerOptions(TypedDict, total=False):
    """What :meth:`CircuitBreakerPolicy.reconfigure` takes: the constructor's arguments of those names."""

    failure_threshold: int
    reset_timeout_seconds: float
    half_open_max_calls: int
    window: OutcomeWindow | None
    failure_rate: float
    minimum_calls: int
    slow_call_threshold: float | None
    slow_call_rate: float
    backoff_factor: float
    max_reset_timeout_seconds: float
    reset_jitter: float


def _counts_everything(exc: BaseException) -> bool:
    return True


class CircuitBreakerPolicy:
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
    ``backoff_factor`` for each consecutive opening up to ``max_reset_timeout_seconds``;
    when it grows (``backoff_factor`` > 1), less up to ``reset_jitter`` of it at random
    (Envoy's ejection time). ``isolate()`` holds it open until ``reset()``.

    An error is a failure if ``is_failure`` says so (by default, every error), neutral
    if ``is_neutral`` says so (by default, none; it is asked first), else a success.
    A neutral outcome, like a cancelled call, changes nothing: not the count of failures
    in a row, not a half-open breaker (its trial slot is freed), not the window.
    Defaults are :data:`BREAKER_DEFAULTS`.
    """

    __slots__ = (
        "_engine", "_listeners", "_lock", "_rng", "_rule", "_timed", "backoff_factor", "clock",
        "failure_rate", "failure_threshold", "half_open_max_calls", "is_failure", "is_neutral",
        "isolated", "max_reset_timeout_seconds", "minimum_calls", "name", "open_for", "openings",
        "reset_jitter", "reset_timeout_seconds", "slow_call_rate", "slow_call_threshold", "window",
    )  # fmt: skip

    def __init__(
        self,
        failure_threshold: int = _D.failure_threshold,
        reset_timeout_seconds: float = _D.reset_timeout_seconds,
        half_open_max_calls: int = _D.half_open_max_calls,
        *,
        is_failure: Callable[[BaseException], bool] | None = None,
        is_neutral: Callable[[BaseException], bool] | None = None,
        clock: Clock = MONOTONIC,
        name: str = "",
        window: OutcomeWindow | None = None,
        failure_rate: float = _D.failure_rate,
        minimum_calls: int = _D.minimum_calls,
        slow_call_threshold: float | None = None,
        slow_call_rate: float = _D.slow_call_rate,
        backoff_factor: float = _D.backoff_factor,
        max_reset_timeout_seconds: float = _D.max_reset_timeout_seconds,
        reset_jitter: float = _D.reset_jitter,
        rng: random.Random | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_seconds <= 0 or half_open_max_calls < 1:
            raise ValueError("breaker thresholds and timeouts must be positive")
        if not (0 < failure_rate <= 1 and 0 < slow_call_rate <= 1 and backoff_factor >= 1):
            raise ValueError("breaker rates must be in (0, 1] and backoff_factor >= 1")
        if not 0 <= reset_jitter < 1:
            raise ValueError("breaker reset_jitter must be in [0, 1)")
        self.clock = clock
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_seconds = reset_timeout_seconds
        self.half_open_max_calls = half_open_max_calls
        self.is_failure = is_failure or _counts_everything
        self.is_neutral = is_neutral
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
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._listeners: list[StateListener] = []
        self._rule: TripRule = (
            ConsecutiveFailures(failure_threshold)
            if window is None
            else FailureRate(
                window,
                clock,
                failure_rate=failure_rate,
                minimum_calls=minimum_calls,
                slow_call_threshold=slow_call_threshold,
                slow_call_rate=slow_call_rate,
            )
        )
        self._timed = self._rule.timed
        # Re-entrant: state changes notify listeners, which may read the breaker again.
        self._lock = threading.RLock()
        self._engine = BreakerEngine(
            self,
            is_failure=self.is_failure,
            is_neutral=is_neutral,
            half_open_max_calls=half_open_max_calls,
            lock=self._lock,
            name=name,
        )

    @property
    def mode(self) -> BreakerMode:
        """``consecutive`` or ``failure_rate``."""
        return self._rule.mode

    @property
    def fail_counter(self) -> int:
        """Counted failures in a row (a success resets it; a neutral outcome leaves it)."""
        return self._engine.fail_counter

    # -- calls ---------------------------------------------------------------

    def fast_state(self) -> BreakerOutcomes | None:
        """The closed state, when an attempt may skip the engine's wrapper and report to it; else None.

        Closed and counting failures in a row (the default mode): the pipeline awaits the
        attempt itself and hands its outcome to the returned state (``failed(exc)`` or
        ``succeeded()``), exactly what aiobreaker's wrapper does with it. Open, half-open
        (its trials are counted) or timed by a failure-rate window: None, and the call
        goes through :meth:`call_through`.
        """
        if self._timed:
            return None
        # The state object itself (``phase`` moves a moment before it), read here rather
        # than through a method of the engine: a frame fewer on every call.
        state: BreakerOutcomes = self._engine._state
        return state if state.__class__ is BreakerEngineClosed else None

    def call_through(self, func: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """Run ``func(*args)`` under the breaker; raises ``BreakerRejectedError`` if refused."""
        engine = self._engine
        if self._timed and engine.phase == "closed":
            return self._measured(engine.call(func, *args))
        return engine.call(func, *args)

    async def _measured(self, call: Awaitable[T]) -> T:
        """A closed-state call the trip rule times: its outcome and start go to the rule."""
        started = self.clock.now()
        try:
            result = await call
        except Exception as exc:
            neutral = self.is_neutral
            if neutral is None or not neutral(exc):
                self._record(self.is_failure(exc), started)
            raise
        self._record(False, started)
        return result

    def _record(self, failure: bool, started: float) -> None:
        with self._lock:
            if self._rule.record(failure=failure, started=started) and self._engine.phase == "closed":
                self.open()

    # -- manual control ------------------------------------------------------

    def open(self) -> None:
        """Open the circuit now, for the next break duration."""
        with self._lock:
            self.openings += 1
            duration = min(
                self.max_reset_timeout_seconds,
                self.reset_timeout_seconds * self.backoff_factor ** (self.openings - 1),
            )
            # Jitter only spreads growing break durations; a fixed one stays exact.
            if self.reset_jitter and self.backoff_factor > 1:
                duration *= 1 - self.reset_jitter * self._rng.random()
            self.open_for = duration
            self._engine.move_open(self.clock.now())

    def close(self) -> None:
        """Close the circuit; the break duration and the window start over."""
        with self._lock:
            self.openings = 0
            self._rule.clear()
            self._engine.move_closed()

    def isolate(self) -> None:
        """Hold the breaker open, rejecting every call, until ``reset()``."""
        with self._lock:
            self.isolated = True
            self.open()

    def reset(self) -> None:
        """Close the breaker and forget its history (also ends an ``isolate()``)."""
        with self._lock:
            self.isolated = False
            self._engine.reset_counter()
            self.close()

    def half_open(self) -> None:
        """Move an open breaker to half-open; a no-op if another caller already did."""
        self._engine.half_open()

    # -- time to half-open ---------------------------------------------------

    def seconds_until_half_open(self) -> float:
        """Seconds until an open breaker admits a trial; 0 when not open or due; inf isolated."""
        engine = self._engine
        if engine.phase != "open":
            return 0.0
        if self.isolated:
            return math.inf
        return max(0.0, engine.opened_at + self.open_for - self.clock.now())

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
    def state_name(self) -> StateName:
        """``closed``, ``open`` or ``half_open`` (an open breaker that is due reads half_open)."""
        phase = self._engine.phase
        if phase == "open" and self.seconds_until_half_open() == 0:
            return "half_open"
        return phase

    # -- the engine's owner hooks --------------------------------------------

    def rejection(self) -> BreakerRejectedError | None:
        """The error refusing a call now, or None when a trial is due (the engine asks)."""
        remaining = self.seconds_until_half_open()
        if remaining <= 0:
            return None
        if self.isolated:
            return BreakerRejectedError("circuit breaker isolated", None)
        return BreakerRejectedError("circuit breaker open", remaining)

    def failed_while_closed(self, consecutive: int) -> None:
        """Open if the trip rule says ``consecutive`` failures in a row are enough."""
        if self._rule.after_failures(consecutive):
            self.open()

    def state_changed(self, old: StateName, new: StateName) -> None:
        """Tell every state listener."""
        for listener in tuple(self._listeners):
            listener(self, old, new)

    # -- listeners -----------------------------------------------------------

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(breaker, old, new)`` on every state change."""
        self._listeners.append(listener)

    # -- live settings -------------------------------------------------------

    def reconfigure(self, **options: Unpack[BreakerOptions]) -> None:
        """Take new settings in place; the state, its counts and the current opening stay.

        A setting left out keeps its value. Kept: the state (closed, open, half-open,
        isolated), the failures in a row, the openings so far (the backoff's count) and
        when the current opening ends; a new ``reset_timeout_seconds`` or backoff sets the
        length of the next opening, and a lowered ``failure_threshold`` opens at the next
        counted failure that reaches it, not at once. A ``window`` of the current one's
        shape (kind and size) leaves the current one in place with its calls; another
        shape, or a change of mode, starts the new window empty: calls counted by time
        cannot be recounted by number, or over another span.
        """
        current = self.window
        window = options.get("window", current)
        if window is not None and current is not None and window.shape == current.shape:
            window = current
        names = BreakerOptions.__optional_keys__
        merged = cast(BreakerOptions, {name: getattr(self, name) for name in names})
        merged.update(options)
        merged["window"] = window
        # The constructor validates the settings and derives the trip rule and the capped
        # maximum: one code path builds a breaker and reconfigures one.
        template = CircuitBreakerPolicy(**merged, clock=self.clock, name=self.name)
        with self._lock:
            for name in names:
                setattr(self, name, getattr(template, name))
            self._rule, self._timed = template._rule, template._timed
            self._engine.half_open_max_calls = template.half_open_max_calls

    def __repr__(self) -> str:
        return (
            f"CircuitBreakerPolicy(name={self.name!r}, mode={self.mode!r}, state={self.state_name!r}, "
            f"failure_threshold={self.failure_threshold}, failure_rate={self.failure_rate}, "
            f"reset_timeout_seconds={self.reset_timeout_seconds}, "
            f"half_open_max_calls={self.half_open_max_calls})"
        )
