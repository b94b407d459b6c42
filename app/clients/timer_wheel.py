"""TimerWheel: the attempt timeouts of one event loop, on a single loop timer, to the next tick."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["EXACT_BELOW_SECONDS", "Expiry", "TICK_SECONDS", "TimerWheel"]

#: How finely timeouts are kept: one fires at most this late (plus the loop's own lag),
#: never early. I/O timeouts need no more (Finagle keeps 10 ms, Netty 100 ms).
TICK_SECONDS = 0.01
#: A timeout due sooner than this gets a timer of the loop's own, exact: a tick late
#: would be more than 1% of it (an attempt cut short by its call's deadline, say).
EXACT_BELOW_SECONDS = 1.0


class _Loop(Protocol):
    """What the wheel needs of its event loop (a test passes a loop of its own)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Any: ...


class Expiry:
    """One timeout: ``callback(arg)`` once due (on the wheel: its tick), unless cancelled first."""

    __slots__ = ("_buckets", "_handle", "_tick", "arg", "callback", "fired")

    def __init__(
        self, buckets: dict[int, set[Expiry]], tick: int, callback: Callable[[Any], object], arg: Any
    ) -> None:
        self._buckets = buckets
        self._tick = tick
        self._handle: Any = None  # the loop's own timer, for a timeout kept exactly
        self.callback = callback
        self.arg = arg
        #: True once the callback was called.
        self.fired = False

    def cancel(self) -> None:
        """Drop it (harmless once fired, or twice)."""
        if self._handle is not None:
            self._handle.cancel()
            return
        buckets, tick = self._buckets, self._tick
        bucket = buckets.get(tick)
        if bucket is not None:
            bucket.discard(self)
            if not bucket:
                del buckets[tick]  # the wheel holds only ticks with a timeout

    def _run(self) -> None:
        """The loop's own timer, for a timeout kept exactly."""
        self.fired = True
        self.callback(self.arg)


#: The buckets of every timeout kept exactly: never holds one.
_EXACT: dict[int, set[Expiry]] = {}


class TimerWheel:
    """Timeouts grouped by tick, under one timer of the loop's, armed for the earliest tick held.

    A timer of asyncio's own loop costs about 24k instructions to arm and cancel while 64
    calls are in flight (its heap orders ``TimerHandle`` objects with a Python ``__lt__``),
    and aiohttp's timeout ~35k an attempt: as much as all the pipeline's policies together.
    Here an attempt's timeout is a set entry in its tick's bucket, and cancelling it takes
    the entry out (and the bucket, once empty): the wheel holds no more ticks than
    timeouts. The loop's timer is re-armed only when a timeout is due earlier than the
    one it waits for, and when it fires: then the due buckets fire, and it is armed for
    the earliest tick still held. While calls finish well within their timeouts, that is
    about once per timeout period, however many calls.

    A timeout due within ``exact_below`` seconds is not rounded: it gets a timer of the
    loop's own. A wheel serves the loop it was made for (``loop``), from that loop's
    thread only, as the loop's own timers.
    """

    __slots__ = ("_armed", "_buckets", "_exact_below", "_handle", "_tick", "loop")

    def __init__(
        self, loop: _Loop, tick: float = TICK_SECONDS, exact_below: float = EXACT_BELOW_SECONDS
    ) -> None:
        if not tick > 0:
            raise ValueError("tick must be > 0")
        #: The event loop whose time the wheel keeps, and whose timer it arms.
        self.loop = loop
        self._tick = tick
        self._exact_below = exact_below
        self._buckets: dict[int, set[Expiry]] = {}
        self._armed: int | None = None  # the tick the loop's timer is set for
        self._handle: Any = None

    def __repr__(self) -> str:
        pending = sum(len(bucket) for bucket in self._buckets.values())
        return f"TimerWheel(tick={self._tick}, pending={pending}, armed={self._armed})"

    @property
    def ticks(self) -> int:
        """Ticks holding a timeout: the wheel's size."""
        return len(self._buckets)

    def call_at(self, when: float, callback: Callable[[Any], object], arg: Any = None) -> Expiry:
        """``callback(arg)`` at ``when`` (loop time; on the wheel, its tick); ``cancel()`` drops it."""
        return self.call_later(when - self.loop.time(), callback, arg)

    def call_later(self, delay: float, callback: Callable[[Any], object], arg: Any = None) -> Expiry:
        """``callback(arg)`` ``delay`` seconds from now (see ``call_at``).

        The work is here, not in a helper both share: the aiohttp transport's attempts
        come here, one frame fewer each. (``call_at``'s time, read back as a delay, may
        come out a few microseconds later: never earlier.)
        """
        when = self.loop.time() + delay
        if delay < self._exact_below:
            expiry = Expiry(_EXACT, 0, callback, arg)
            expiry._handle = self.loop.call_at(when, expiry._run)
            return expiry
        tick = math.ceil(when / self._tick)
        buckets = self._buckets
        bucket = buckets.get(tick)
        if bucket is None:
            bucket = buckets[tick] = set()
            armed = self._armed
            if armed is None or tick < armed:
                self._arm(tick)
        expiry = Expiry(buckets, tick, callback, arg)
        bucket.add(expiry)
        return expiry

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = tick
        self._handle = self.loop.call_at(tick * self._tick, self._expire)

    def _expire(self) -> None:
        """The loop's timer: fire what is due, then arm for the earliest tick still held."""
        armed = self._armed
        self._handle = self._armed = None
        # The loop runs a timer up to its clock's resolution early: the armed tick is due.
        due = max(math.floor(self.loop.time() / self._tick), armed if armed is not None else 0)
        buckets = self._buckets
        for tick in sorted(tick for tick in buckets if tick <= due):
            bucket = buckets.get(tick)
            # One at a time, each out of its bucket before its callback runs: a callback may
            # cancel another of the tick (then it does not fire) or add one (then it does).
            while bucket:
                expiry = bucket.pop()
                expiry.fired = True
                try:
                    expiry.callback(expiry.arg)
                except Exception as exc:  # one failing callback must not stop the others
                    handler = getattr(self.loop, "call_exception_handler", None)
                    if handler is None:
                        raise
                    handler({"message": "timer wheel callback failed", "exception": exc})
            if bucket is not None and buckets.get(tick) is bucket:
                del buckets[tick]
        if buckets:
            earliest = min(buckets)
            if self._armed is None or earliest < self._armed:  # a callback may have armed it
                self._arm(earliest)
