"""Deadline: a call's time budget on the injected clock; one without a budget never ends."""

from __future__ import annotations

import math

from app.clients.testing import FakeClock
from app.resilience.deadline import Deadline


def test_never_has_no_bound_however_far_the_clock_moves() -> None:
    clock = FakeClock()
    never = Deadline.never(clock)
    clock.advance(1e9)
    assert not never.bounded
    assert never.remaining() == math.inf
    assert not never.expired()
    assert never.cap(2.5) == 2.5
    assert Deadline.after(clock, None).at == never.at == math.inf


def test_a_budget_counts_down_on_the_clock_and_never_below_zero() -> None:
    clock = FakeClock()
    deadline = Deadline.after(clock, 3.0)
    assert deadline.bounded
    clock.advance(1.0)
    assert deadline.remaining() == 2.0
    assert deadline.cap(5.0) == 2.0
    assert not deadline.expired()
    clock.advance(5.0)
    assert deadline.remaining() == 0.0
    assert deadline.expired()
