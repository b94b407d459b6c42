"""TimerWheel: timeouts fire at their tick (never early), once; one loop timer serves them all; near ones are exact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.clients.timer_wheel import Expiry, TimerWheel


class _Handle:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """A loop whose time the test moves; it runs due timers in order, as asyncio's would."""

    def __init__(self) -> None:
        self.now = 0.0
        self.armed: list[_Handle] = []  # every call_at, cancelled or not
        self.errors: list[dict[str, Any]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Handle:
        handle = _Handle(when, callback)
        self.armed.append(handle)
        return handle

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def pending(self) -> list[_Handle]:
        return [h for h in self.armed if not h.cancelled]

    def advance_to(self, now: float) -> None:
        self.now = now
        while due := sorted((h for h in self.pending() if h.when <= now), key=lambda h: h.when):
            due[0].cancelled = True  # ran: no longer pending
            due[0].callback()


def _recorder() -> tuple[list[Any], Callable[[Any], None]]:
    seen: list[Any] = []
    return seen, seen.append


def test_a_timeout_fires_at_its_tick_never_before() -> None:
    """Due at 0.015 with 10 ms ticks: not at 0.0199, at 0.02 (the next tick), once."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    expiry = wheel.call_at(0.015, record, "a")
    loop.advance_to(0.0199)
    assert seen == []
    assert not expiry.fired
    loop.advance_to(0.02)
    assert seen == ["a"]
    assert expiry.fired
    loop.advance_to(1.0)
    assert seen == ["a"]


def test_call_later_counts_from_the_loop_time() -> None:
    """``call_later(d)`` is ``call_at(now + d)``."""
    loop = FakeLoop()
    loop.now = 100.0
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    wheel.call_later(0.5, record, "x")
    loop.advance_to(100.49)
    assert seen == []
    loop.advance_to(100.5 + 0.01)
    assert seen == ["x"]


def test_a_cancelled_timeout_never_fires() -> None:
    """Cancelled before its tick (twice, harmlessly): nothing fires, ``fired`` stays False."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    kept = wheel.call_at(0.05, record, "kept")
    dropped = wheel.call_at(0.05, record, "dropped")
    dropped.cancel()
    dropped.cancel()
    loop.advance_to(1.0)
    assert seen == ["kept"]
    assert kept.fired
    assert not dropped.fired


def test_one_loop_timer_serves_a_stream_of_timeouts() -> None:
    """A thousand calls with the same timeout, each done in time: the loop's timer was armed once."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    for i in range(1000):
        loop.now = i * 0.001  # a call a millisecond, each with a 10 s timeout
        wheel.call_later(10.0, record, i).cancel()
    assert len(loop.armed) == 1
    assert seen == []


def test_an_earlier_timeout_rearms_the_loop_timer() -> None:
    """A timeout due before the one the timer waits for moves the timer earlier; both fire in order."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    wheel.call_at(5.0, record, "late")
    wheel.call_at(1.0, record, "early")
    assert [h.when for h in loop.pending()] == [pytest.approx(1.0)]
    loop.advance_to(1.0)
    assert seen == ["early"]
    assert [h.when for h in loop.pending()] == [pytest.approx(5.0)]
    loop.advance_to(5.0)
    assert seen == ["early", "late"]


def test_a_tick_goes_with_its_last_timeout_and_an_idle_wheel_arms_nothing() -> None:
    """Cancelled timeouts take their ticks with them; the timer then moves to the earliest tick held."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    expiries = [wheel.call_at(0.105 + i * 0.01, record, i) for i in range(50)]  # ticks 11 to 60
    last = wheel.call_at(0.895, record, "last")  # tick 90
    assert wheel.ticks == 51
    for expiry in expiries:
        expiry.cancel()
    assert wheel.ticks == 1
    loop.advance_to(0.11)  # armed for tick 11: nothing due, so it moves to tick 90
    assert [h.when for h in loop.pending()] == [pytest.approx(0.9)]
    last.cancel()
    assert wheel.ticks == 0
    loop.advance_to(0.9)
    assert loop.pending() == []  # an idle wheel keeps no timer of the loop's
    assert seen == []
    wheel.call_at(2.0, record, "again")  # and it arms again for a new one
    loop.advance_to(2.0)
    assert seen == ["again"]


def test_long_timeouts_hold_no_more_ticks_than_timeouts() -> None:
    """A call a millisecond with an hour's timeout, each done in 50 ms: the wheel holds the calls in flight."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    in_flight: list[tuple[float, Expiry]] = []
    seen, record = _recorder()
    for i in range(20_000):
        loop.now = i * 0.001
        in_flight.append((loop.now + 0.05, wheel.call_later(3600.0, record, i)))
        while in_flight and in_flight[0][0] <= loop.now:
            in_flight.pop(0)[1].cancel()
        assert wheel.ticks <= 6  # 50 in flight, over the last 50 ms: five or six ticks
    assert seen == []
    assert len(loop.armed) == 1  # the first timeout's tick: an hour away, never re-armed


def test_a_callback_may_add_a_timeout_already_due() -> None:
    """A timeout added by a callback for a tick already due fires in the same pass."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()

    def chain(_: object) -> None:
        seen.append("first")
        wheel.call_at(0.04, record, "added")

    wheel.call_at(0.05, chain)
    loop.advance_to(0.05)
    assert seen == ["first", "added"]
    assert wheel.ticks == 0


def test_a_callback_that_cancels_another_of_its_tick_wins() -> None:
    """Two due on the same tick, the first cancelling the second: the second does not fire."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen: list[str] = []
    expiries: dict[str, Expiry] = {}

    def first(other: str) -> None:
        seen.append("first")
        expiries[other].cancel()

    def second(other: str) -> None:
        seen.append("second")
        expiries[other].cancel()

    expiries["a"] = wheel.call_at(0.05, first, "b")
    expiries["b"] = wheel.call_at(0.05, second, "a")
    loop.advance_to(0.05)
    assert len(seen) == 1


def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    """An exception goes to the loop's exception handler; the rest of the tick fires."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()

    def boom(_: object) -> None:
        raise RuntimeError("boom")

    wheel.call_at(0.05, boom)
    wheel.call_at(0.05, record, "ok")
    loop.advance_to(0.05)
    assert seen == ["ok"]
    assert [str(e["exception"]) for e in loop.errors] == ["boom"]


def test_a_timer_run_a_hair_early_still_fires_its_tick() -> None:
    """The loop may run a timer up to its clock's resolution early: the armed tick fires all the same."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01, exact_below=0)
    seen, record = _recorder()
    wheel.call_at(0.3, record, "due")
    (handle,) = loop.pending()
    loop.now = handle.when - 1e-9
    handle.cancelled = True
    handle.callback()
    assert seen == ["due"]


@pytest.mark.parametrize("tick", [0.0, -1.0, float("nan")])
def test_a_tick_must_be_positive(tick: float) -> None:
    """A tick of zero, below it, or nan is refused."""
    with pytest.raises(ValueError, match="tick"):
        TimerWheel(FakeLoop(), tick=tick)


def test_a_timeout_due_within_a_second_gets_an_exact_timer_of_the_loop() -> None:
    """0.25 s away: a loop timer at exactly that time (not rounded to the tick), which cancel() drops."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01)
    seen, record = _recorder()
    kept = wheel.call_later(0.2534, record, "kept")
    dropped = wheel.call_later(0.5, record, "dropped")
    assert sorted(h.when for h in loop.pending()) == [0.2534, 0.5]
    assert wheel.ticks == 0
    dropped.cancel()
    loop.advance_to(0.2534)
    assert seen == ["kept"]
    assert kept.fired
    loop.advance_to(2.0)
    assert seen == ["kept"]
    assert not dropped.fired


def test_a_timeout_a_second_or_more_away_goes_on_the_wheel() -> None:
    """1.0 s away and beyond: on the wheel, to the tick; the loop's timer is the wheel's one."""
    loop = FakeLoop()
    wheel = TimerWheel(loop, tick=0.01)
    seen, record = _recorder()
    wheel.call_later(1.0034, record, "far")
    assert wheel.ticks == 1
    assert [h.when for h in loop.pending()] == [pytest.approx(1.01)]
    loop.advance_to(1.01)
    assert seen == ["far"]
