"""The balancer on a driven clock: P2C over peak-EWMA, penalties, ejection, panic, drain."""

from __future__ import annotations

import collections
import random

import pytest

from app.balancing import Balancer, BalancerSettings, Instance, max_ejectable
from app.clients.testing import FakeClock

URLS = [f"http://127.0.0.1:{9001 + i}/api/v1/" for i in range(10)]


def make(n: int, clock: FakeClock, seed: int = 7, **settings: object) -> Balancer:
    return Balancer(URLS[:n], BalancerSettings(**settings), clock=clock, rng=random.Random(seed))  # type: ignore[arg-type]


def run(
    balancer: Balancer,
    calls: int,
    rtt: dict[str, float],
    failing: frozenset[str] = frozenset(),
    clock: FakeClock | None = None,
) -> collections.Counter[str]:
    """Sequential calls: each picks, 'takes' its instance's RTT on the clock, and ends."""
    picks: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        instance = balancer.pick()
        picks[instance.url] += 1
        seconds = rtt.get(instance.url, 0.01)
        if clock is not None:
            clock.advance(seconds)
        outcome = "failure" if instance.url in failing else "success"
        balancer.finished(instance, outcome, seconds)
    return picks


@pytest.mark.parametrize(
    ("instances", "percent", "expected"),
    [(1, 50, 0), (2, 50, 1), (3, 50, 1), (10, 50, 5), (2, 10, 1), (10, 10, 1), (10, 0, 0), (3, 100, 3)],
)
def test_how_many_may_be_ejected(instances: int, percent: int, expected: int) -> None:
    # At least one in any cluster of two or more (Envoy's floor ejects none of 2 at 10%),
    # never the only instance, none at 0%.
    assert max_ejectable(instances, percent) == expected


def test_a_slow_instance_gets_little_traffic() -> None:
    clock = FakeClock()
    balancer = make(3, clock)
    rtt = {URLS[0]: 0.002, URLS[1]: 0.002, URLS[2]: 0.020}
    run(balancer, 100, rtt, clock=clock)  # warm-up
    picks = run(balancer, 1000, rtt, clock=clock)
    assert picks[URLS[2]] < 100, picks  # under 10% once warmed up
    assert min(picks[URLS[0]], picks[URLS[1]]) > 350, picks


def test_a_fast_failing_instance_does_not_attract_traffic() -> None:
    # Failures answered in a tenth of a millisecond: by latency alone it would look the best.
    clock = FakeClock()
    balancer = make(
        3, clock, consecutive_failures=10_000, failure_rate=1.0, failure_rate_minimum_requests=10**6
    )
    rtt = {URLS[0]: 0.005, URLS[1]: 0.005, URLS[2]: 0.0001}
    picks = run(balancer, 1000, rtt, failing=frozenset({URLS[2]}), clock=clock)
    assert picks[URLS[2]] < 100, picks
    assert balancer.status()["ejected"] == 0  # the penalty alone did it


def test_least_request_and_round_robin_spread_by_their_own_rule() -> None:
    clock = FakeClock()
    rr = make(3, clock, policy="round_robin")
    assert run(rr, 300, {}) == {URLS[0]: 100, URLS[1]: 100, URLS[2]: 100}
    lr = make(3, clock, policy="least_request")
    held = [lr.pick() for _ in range(6)]  # nothing ends: the least loaded always wins
    assert collections.Counter(i.url for i in held) == {URLS[0]: 2, URLS[1]: 2, URLS[2]: 2}


def test_a_retry_goes_to_an_instance_not_yet_tried() -> None:
    clock = FakeClock()
    balancer = make(3, clock)
    for _ in range(200):
        first = balancer.pick()
        second = balancer.pick([first.url])
        third = balancer.pick([first.url, second.url])
        assert len({first.url, second.url, third.url}) == 3
        fourth = balancer.pick([first.url, second.url, third.url])  # all tried: any will do
        for instance in (first, second, third, fourth):
            balancer.finished(instance, "success", 0.01)


def test_consecutive_failures_eject_for_a_growing_capped_time() -> None:
    clock = FakeClock()
    balancer = make(3, clock, consecutive_failures=5, base_ejection_seconds=30, max_ejection_seconds=70)
    bad = balancer.instances[2]
    for _ in range(4):
        balancer.finished(_take(balancer, bad), "failure", 0.01)
    assert not bad.ejected(clock.now())
    balancer.finished(_take(balancer, bad), "failure", 0.01)
    assert bad.ejected(clock.now())
    first = bad.ejected_until - clock.now()
    assert 30 <= first <= 33  # base x 1, up to 10% jitter
    # No traffic while ejected.
    assert URLS[2] not in run(balancer, 300, {})
    clock.advance(first + 0.01)
    assert run(balancer, 300, {})[URLS[2]] > 0  # back: traffic again
    for _ in range(5):
        balancer.finished(_take(balancer, bad), "failure", 0.01)
    second = bad.ejected_until - clock.now()
    assert 60 <= second <= 66  # base x 2
    clock.advance(second + 0.01)
    balancer.pick()  # the return is noticed at a pick
    for _ in range(5):
        balancer.finished(_take(balancer, bad), "failure", 0.01)
    assert bad.ejected_until - clock.now() == pytest.approx(70)  # base x 3 = 90, capped
    assert bad.ejections == 3


def test_a_healthy_interval_shortens_the_next_ejection() -> None:
    clock = FakeClock()
    balancer = make(3, clock, consecutive_failures=1, base_ejection_seconds=10, sweep_interval_seconds=5)
    bad = balancer.instances[0]
    balancer.finished(_take(balancer, bad), "failure", 0.01)
    assert bad.times_ejected == 1
    clock.advance(11)
    balancer.pick()  # back
    for _ in range(3):  # healthy sweep intervals: the multiplier goes back down
        clock.advance(5)
        run(balancer, 3, {})
    assert bad.times_ejected == 0


def test_failure_rate_sweep_ejects_with_enough_volume_only() -> None:
    clock = FakeClock()
    balancer = make(
        3,
        clock,
        consecutive_failures=10_000,
        failure_rate=0.5,
        failure_rate_minimum_requests=20,
        sweep_interval_seconds=10,
    )
    flaky = balancer.instances[1]
    for i in range(19):  # 19 requests, half failing: not enough volume
        balancer.finished(_take(balancer, flaky), "failure" if i % 2 else "success", 0.01)
    clock.advance(10)
    balancer.pick()
    assert not flaky.ejected(clock.now())
    for i in range(20):  # 20 with 10 failures: 50% >= threshold
        balancer.finished(_take(balancer, flaky), "failure" if i % 2 else "success", 0.01)
    clock.advance(10)
    balancer.pick()
    assert flaky.ejected(clock.now())
    assert flaky.last_ejection_reason == "failure_rate"


@pytest.mark.parametrize(
    ("instances", "failing", "max_percent", "panic", "ejected", "panicking"),
    [
        # 2 instances, both failing: one may go (never both); 1 of 2 healthy is 50%, not under it.
        (2, 2, 50, 50, 1, False),
        # 3 instances, 2 failing: at 50% one is ejected.
        (3, 2, 50, 50, 1, False),
        # 3 instances with every one ejectable: 1 of 3 healthy is under 50%: panic.
        (3, 2, 100, 50, 2, True),
        # 10 instances, 7 failing: at most 5 ejected; 5 of 10 healthy is not under 50%.
        (10, 7, 50, 50, 5, False),
        # 10 instances, 7 ejectable: 3 of 10 healthy is under 50%: panic.
        (10, 7, 100, 50, 7, True),
        # A panic threshold of 0 never panics.
        (10, 7, 100, 0, 7, False),
    ],
)
def test_max_ejection_percent_and_panic_threshold(
    instances: int, failing: int, max_percent: int, panic: int, ejected: int, panicking: bool
) -> None:
    clock = FakeClock()
    balancer = make(
        instances,
        clock,
        consecutive_failures=1,
        max_ejection_percent=max_percent,
        panic_threshold_percent=panic,
    )
    for bad in balancer.instances[:failing]:
        balancer.finished(_take(balancer, bad), "failure", 0.01)
    status = balancer.status()
    assert status["ejected"] == ejected
    assert status["panic"] is panicking
    picks = run(balancer, 400, {})
    ejected_urls = {i.url for i in balancer.instances if i.ejected(clock.now())}
    if panicking:  # spread over every instance, ejected ones too
        assert all(picks[url] > 0 for url in ejected_urls)
    else:
        assert not any(picks[url] for url in ejected_urls)


def test_retry_after_keeps_an_instance_avoided_for_its_window() -> None:
    clock = FakeClock()
    balancer = make(3, clock)
    throttled = balancer.instances[0]
    balancer.finished(_take(balancer, throttled), "throttled", 0.01, retry_after=5.0)
    assert URLS[0] not in run(balancer, 200, {})
    assert not throttled.ejected(clock.now())  # avoided, not ejected
    clock.advance(5.01)
    assert run(balancer, 2000, {}, clock=clock)[URLS[0]] > 0


def test_every_instance_failing_is_reported_once_it_is_true() -> None:
    clock = FakeClock()
    balancer = make(3, clock, consecutive_failures=100)
    told: list[bool] = []
    balancer.on_all_failed = lambda: told.append(True)
    a, b, c = balancer.instances
    assert balancer.finished(_take(balancer, a), "failure", 0.01) is False
    assert balancer.finished(_take(balancer, b), "failure", 0.01) is False
    assert balancer.finished(_take(balancer, c), "failure", 0.01) is True
    assert balancer.finished(_take(balancer, a), "failure", 0.01) is True
    assert told == [True]  # once per episode
    balancer.finished(_take(balancer, b), "success", 0.01)
    assert balancer.finished(_take(balancer, a), "failure", 0.01) is False


def test_a_removed_instance_drains_and_a_new_one_starts_slowly() -> None:
    clock = FakeClock()
    balancer = make(2, clock, slow_start_seconds=10)
    removed: list[str] = []
    balancer.add_removal_listener(lambda instance: removed.append(instance.url))
    run(balancer, 50, {URLS[0]: 0.01, URLS[1]: 0.01}, clock=clock)
    busy = _take(balancer, balancer.instances[1])
    balancer.update([URLS[0], URLS[2]])
    assert removed == []  # a call is still in flight on it
    assert URLS[1] not in run(balancer, 100, {})  # but it gets no new ones
    balancer.finished(busy, "success", 0.01)
    assert removed == [URLS[1]]
    assert [i.url for i in balancer.instances] == [URLS[0], URLS[2]]
    # The newcomer is not flooded: with equal RTTs it ramps up over the slow-start window.
    rtt = {URLS[0]: 0.01, URLS[2]: 0.01}
    early = run(balancer, 200, rtt, clock=clock)
    assert early[URLS[2]] < early[URLS[0]]


def test_an_instance_readded_while_draining_comes_back_with_its_state() -> None:
    clock = FakeClock()
    balancer = make(2, clock)
    busy = _take(balancer, balancer.instances[1])
    balancer.update([URLS[0]])
    balancer.update([URLS[0], URLS[1]])
    balancer.finished(busy, "success", 0.01)
    assert [i.url for i in balancer.instances] == [URLS[0], URLS[1]]
    assert run(balancer, 100, {})[URLS[1]] > 0


def _take(balancer: Balancer, instance: Instance) -> Instance:
    """Count an attempt as started on ``instance`` (as pick does) without picking."""
    instance.in_flight += 1
    return instance


def test_discoverys_first_set_is_the_start_not_newcomers() -> None:
    clock = FakeClock()
    balancer = Balancer([], BalancerSettings(slow_start_seconds=10), clock=clock, rng=random.Random(3))
    balancer.update(URLS[:3])  # what discovery found first
    rtt = {URLS[0]: 0.002, URLS[1]: 0.002, URLS[2]: 0.02}
    picks = run(balancer, 300, rtt, clock=clock)
    assert picks[URLS[2]] < 30, picks  # compared by cost at once: no "slow start" into the slow one
    balancer.update(URLS[:4])  # a later newcomer does ramp up
    assert balancer.instances[3].added_at == clock.now()


def test_a_cancelled_attempt_still_says_the_instance_is_slow() -> None:
    clock = FakeClock()
    balancer = make(2, clock)
    slow = balancer.instances[1]
    balancer.finished(_take(balancer, slow), "cancelled", 0.5)  # a hedge's loser, after 500 ms
    assert slow.decayed_ewma(clock.now(), 10) == pytest.approx(0.5)
    balancer.finished(_take(balancer, slow), "cancelled", 0.001)  # cancelled early: says nothing
    assert slow.decayed_ewma(clock.now(), 10) == pytest.approx(0.5)


@pytest.mark.parametrize("policy", ["p2c_peak_ewma", "least_request", "round_robin"])
def test_instances_in_a_retry_after_window_are_the_last_resort(policy: str) -> None:
    clock = FakeClock()
    balancer = make(3, clock, policy=policy)
    for throttled in balancer.instances[:2]:
        balancer.finished(_take(balancer, throttled), "throttled", 0.01, retry_after=30)
    assert run(balancer, 200, {}) == {URLS[2]: 200}


def test_a_quiet_upstream_counts_every_healthy_interval() -> None:
    clock = FakeClock()
    balancer = make(3, clock, consecutive_failures=1, base_ejection_seconds=10, sweep_interval_seconds=10)
    bad = balancer.instances[0]
    for _ in range(3):
        balancer.finished(_take(balancer, bad), "failure", 0.01)
        clock.advance(bad.ejected_until - clock.now() + 0.01)
        balancer.pick()
    assert bad.times_ejected == 3
    clock.advance(3600)  # an hour with no calls, then one
    balancer.pick()
    assert bad.times_ejected == 0
