"""The GCRA rate limiter gives back a booked slot: the tail rolls back, a middle slot is reused."""

from __future__ import annotations

import math
import random

import pytest

from app.resilience.ratelimit import RateLimiter
from tests.support.clock import FakeClock


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("rate", "burst"), [(10.0, 1), (10.0, 4), (3.0, 2)])
def test_giving_back_every_waiting_booking_restores_the_limiter(seed, rate, burst) -> None:
    """Any number of waiting bookings, given back in any order at any time: the next call is as on a limiter that never saw them."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(rate, burst, "wait", clock)
    reference = RateLimiter(rate, burst, "wait", clock)
    for _ in range(burst):  # the kept calls: both limiters see them
        assert limiter.reserve(math.inf) == reference.reserve(math.inf) == 0.0
    slots = [limiter.reserve_slot(math.inf) for _ in range(100)]
    assert all(wait > 0 for wait, _ in slots)
    rng.shuffle(slots)
    for _, slot in slots:
        clock.advance(rng.uniform(0, 0.05))
        limiter.give_back(slot)
    assert limiter.reserve(math.inf) == reference.reserve(math.inf)
    assert limiter.reserve(math.inf) == reference.reserve(math.inf)


def test_the_last_booking_given_back_rolls_the_schedule_back() -> None:
    """Giving back the latest booking is as if it was never made."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    assert limiter.reserve(1.0) == 0.0
    wait, slot = limiter.reserve_slot(1.0)
    assert wait == pytest.approx(0.1)
    limiter.give_back(slot)
    assert limiter.reserve(1.0) == pytest.approx(0.1)
    assert limiter.reserve(1.0) == pytest.approx(0.2)


def test_a_middle_slot_given_back_goes_to_the_next_caller() -> None:
    """A waiter given back between others leaves its slot to the next newcomer, not a gap."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    limiter.reserve(1.0)
    _, b = limiter.reserve_slot(1.0)  # 0.1
    _, c = limiter.reserve_slot(1.0)  # 0.2
    limiter.reserve_slot(1.0)  # 0.3
    limiter.give_back(b)
    limiter.give_back(c)
    assert limiter.reserve(1.0) == pytest.approx(0.1)
    assert limiter.reserve(1.0) == pytest.approx(0.2)
    assert limiter.reserve(1.0) == pytest.approx(0.4)


def test_a_middle_slot_whose_time_passed_is_not_reused() -> None:
    """A freed slot in the past is gone: using it late would put two calls closer than 1/rate."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    limiter.reserve(1.0)
    _, b = limiter.reserve_slot(1.0)  # 0.1
    limiter.reserve_slot(1.0)  # 0.2
    limiter.give_back(b)
    clock.advance(0.15)
    assert limiter.reserve(1.0) == pytest.approx(0.15)  # at 0.3, after the 0.2 booking


def test_given_back_slots_collapse_once_the_tail_goes() -> None:
    """Middle slots given back first, then the tail: the schedule rolls back over all of them."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    limiter.reserve(1.0)
    slots = [limiter.reserve_slot(5.0)[1] for _ in range(5)]
    for slot in slots[:-1]:
        limiter.give_back(slot)
    clock.advance(0.35)  # every middle slot's time has passed
    limiter.give_back(slots[-1])
    assert limiter.reserve(1.0) == 0.0


def test_fail_mode_booking_given_back() -> None:
    """In fail mode a booked call that never ran (e.g. refused by the bulkhead) frees its slot."""
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=1, mode="fail", clock=clock)
    wait, slot = limiter.reserve_slot(5.0)
    assert wait == 0.0
    assert limiter.reserve(5.0) < 0
    limiter.give_back(slot)
    assert limiter.reserve(5.0) == 0.0


def test_refusal_reports_the_earliest_free_slot() -> None:
    """A refused call is told when the earliest slot frees, a given-back one included."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    limiter.reserve(1.0)
    _, b = limiter.reserve_slot(1.0)  # 0.1
    limiter.reserve_slot(1.0)  # 0.2
    limiter.give_back(b)
    assert limiter.reserve(0.05) == pytest.approx(-0.1)


@pytest.mark.parametrize("max_wait", [0.1, 0.05, 0.0])
def test_a_wait_that_uses_the_whole_deadline_is_refused(max_wait) -> None:
    """A slot no earlier than the deadline is refused at once: the call would have no time left."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    limiter.reserve(1.0)
    assert limiter.reserve(max_wait) == pytest.approx(-0.1)
    assert limiter.reserve(0.11) == pytest.approx(0.1)  # nothing was booked by the refusal
