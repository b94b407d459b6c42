"""Every policy takes new settings in place and keeps its state; what cannot change live is named."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.balancing import Balancer, BalancerSettings
from app.clients import ClientConfig, ServerError, reconfigure_problems
from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.policies import ClientPolicies
from app.clients.reconfigure import NOT_LIVE
from app.clients.session import follow_bulkhead, new_session
from app.clients.testing import FakeClock
from app.errors import ClientTimeoutError
from app.observability.metrics import MetricFamilies
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead, BulkheadRejectedError
from app.resilience.deadline import Deadline
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy
from app.resilience.window import CountWindow, TimeWindow
from app.state import GlobalRateLimiter, SharedBreaker, SharedState, SharedStateSettings

URL = "http://127.0.0.1:9/api/v1"


async def _fail() -> None:
    raise ServerError(status=503)


async def _ok() -> str:
    return "ok"


async def _failures(breaker: CircuitBreakerPolicy, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ServerError):
            await breaker.call_through(_fail)


def _breaker(clock: FakeClock, **options: Any) -> CircuitBreakerPolicy:
    return CircuitBreakerPolicy(is_failure=lambda e: isinstance(e, ServerError), clock=clock, **options)


# -- circuit breaker ---------------------------------------------------------------------


async def test_breaker_keeps_its_count_and_a_lower_threshold_opens_at_the_next_failure() -> None:
    """Two failures in a row survive a threshold change 5 -> 3; the third failure opens it, not the reconfigure."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=5)
    await _failures(breaker, 2)
    breaker.reconfigure(failure_threshold=3)
    assert (breaker.fail_counter, breaker.state_name, breaker.failure_threshold) == (2, "closed", 3)
    breaker.reconfigure(failure_threshold=2)
    assert breaker.state_name == "closed"  # at the threshold already, but no new evidence yet
    await _failures(breaker, 1)
    assert breaker.state_name == "open"


async def test_an_open_breaker_keeps_its_open_until_and_the_new_reset_timeout_sets_the_next_opening() -> None:
    """Open with 30 s left: a reset timeout of 5 leaves the 30 s; a failed trial then opens it for 5 s."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=2, reset_timeout_seconds=40)
    await _failures(breaker, 2)
    clock.advance(10)
    breaker.reconfigure(reset_timeout_seconds=5, failure_threshold=4, half_open_max_calls=2)
    assert breaker.state_name == "open"
    assert breaker.seconds_until_half_open() == 30
    assert breaker.openings == 1
    clock.advance(30)
    await _failures(breaker, 1)  # the trial
    assert breaker.seconds_until_half_open() == 5
    clock.advance(5)
    assert await breaker.call_through(_ok) == "ok"
    assert breaker.state_name == "closed"


async def test_isolated_and_half_open_states_stay() -> None:
    """An isolated breaker stays isolated; a half-open one keeps its trial in flight and takes the new trial limit."""
    clock = FakeClock()
    isolated = _breaker(clock)
    isolated.isolate()
    isolated.reconfigure(reset_timeout_seconds=1)
    assert isolated.isolated
    assert isolated.seconds_until_half_open() == float("inf")

    breaker = _breaker(clock, failure_threshold=1, reset_timeout_seconds=1)
    await _failures(breaker, 1)
    clock.advance(1)
    gate = asyncio.Event()

    async def trial() -> str:
        await gate.wait()
        return "ok"

    first = asyncio.ensure_future(breaker.call_through(trial))
    await asyncio.sleep(0)
    breaker.reconfigure(half_open_max_calls=2, failure_threshold=3)
    assert breaker.state_name == "half_open"
    second = asyncio.ensure_future(breaker.call_through(trial))  # the new limit admits a second trial
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, second) == ["ok", "ok"]
    assert breaker.state_name == "closed"


async def test_a_window_of_the_same_shape_keeps_its_calls_and_new_rates_judge_them() -> None:
    """Failure-rate mode: a new CountWindow(100) is ignored for the current one, whose calls a lower rate then trips on."""
    clock = FakeClock()
    window = CountWindow(100)
    breaker = _breaker(clock, window=window, failure_rate=0.5, minimum_calls=10)
    for _ in range(18):
        assert await breaker.call_through(_ok) == "ok"
    await _failures(breaker, 1)
    breaker.reconfigure(window=CountWindow(100), failure_rate=0.1, minimum_calls=10)
    assert breaker.window is window
    assert (window.totals.calls, window.totals.failures) == (19, 1)
    await _failures(breaker, 1)  # 2 of 20: 10%
    assert breaker.state_name == "open"


async def test_a_window_of_another_shape_starts_empty_and_the_state_stays() -> None:
    """A count window 100 -> a time window: the new one is empty; an open breaker stays open, a mode change too."""
    clock = FakeClock()
    breaker = _breaker(clock, window=CountWindow(100), failure_rate=0.5, minimum_calls=2)
    await _failures(breaker, 2)
    assert breaker.state_name == "open"
    timed = TimeWindow(10, clock)
    breaker.reconfigure(window=timed)
    assert breaker.window is timed
    assert timed.totals.calls == 0
    assert (breaker.state_name, breaker.mode) == ("open", "failure_rate")
    breaker.reconfigure(window=None, failure_threshold=2)
    assert (breaker.state_name, breaker.mode) == ("open", "consecutive")


def test_a_breaker_refuses_invalid_settings_and_keeps_its_own() -> None:
    """ValueError from the constructor's checks, and nothing changed."""
    breaker = _breaker(FakeClock(), failure_threshold=5)
    with pytest.raises(ValueError, match="thresholds"):
        breaker.reconfigure(failure_threshold=0, reset_timeout_seconds=1)
    assert (breaker.failure_threshold, breaker.reset_timeout_seconds) == (5, 60)


# -- bulkhead ----------------------------------------------------------------------------


async def _queue(bulkhead: Bulkhead, n: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(bulkhead.acquire()) for _ in range(n)]
    await asyncio.sleep(0)
    return tasks


async def test_a_larger_bulkhead_admits_waiters_at_once() -> None:
    """2 in flight and 3 waiting; max 2 -> 4: two waiters get their slots now, one still waits."""
    bulkhead = Bulkhead(2, 10)
    for _ in range(2):
        await bulkhead.acquire()
    tasks = await _queue(bulkhead, 3)
    bulkhead.reconfigure(4, 10)
    await asyncio.sleep(0)
    assert (bulkhead.in_flight, bulkhead.queued) == (4, 1)
    assert sum(t.done() for t in tasks) == 2
    bulkhead.release()
    await asyncio.gather(*tasks)


async def test_a_smaller_bulkhead_drops_nothing_and_admits_none_until_below_it() -> None:
    """4 in flight, 2 waiting; max 4 -> 2: all stay, releases retire slots until 2 are in flight, then hand over."""
    bulkhead = Bulkhead(4, 10)
    for _ in range(4):
        await bulkhead.acquire()
    tasks = await _queue(bulkhead, 2)
    bulkhead.reconfigure(2, 10)
    assert (bulkhead.in_flight, bulkhead.queued) == (4, 2)
    assert not bulkhead.try_acquire()
    bulkhead.release()
    bulkhead.release()
    assert (bulkhead.in_flight, bulkhead.queued) == (2, 2)
    bulkhead.release()  # now below the new size: the oldest waiter takes the slot
    await asyncio.sleep(0)
    assert (bulkhead.in_flight, bulkhead.queued) == (2, 1)
    assert tasks[0].done()
    bulkhead.release()
    await asyncio.gather(*tasks)


async def test_a_shorter_queue_keeps_its_waiters_and_refuses_newcomers() -> None:
    """3 waiting, max_waiting 5 -> 1: the three still wait; a fourth is refused; invalid sizes change nothing."""
    bulkhead = Bulkhead(1, 5)
    await bulkhead.acquire()
    tasks = await _queue(bulkhead, 3)
    bulkhead.reconfigure(1, 1)
    assert bulkhead.queued == 3
    with pytest.raises(BulkheadRejectedError):
        await bulkhead.acquire()
    with pytest.raises(ValueError, match="max_concurrent"):
        bulkhead.reconfigure(0, 1)
    assert (bulkhead.max_concurrent, bulkhead.max_waiting) == (1, 1)
    for _ in range(4):
        bulkhead.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert bulkhead.in_flight == 0


# -- rate limit, budget, adaptive limit, hedging ------------------------------------------


def test_a_rate_limiter_keeps_its_tokens_at_the_new_rate() -> None:
    """A spent bucket stays spent and refills at the new rate; a full one stays full; a larger burst adds its tokens."""
    clock = FakeClock()
    spent = RateLimiter(10, burst=5, mode="fail", clock=clock)
    assert [spent.reserve(1.0) for _ in range(5)] == [0.0] * 5
    spent.reconfigure(20, 5, "fail")
    assert spent.reserve(1.0) == pytest.approx(-0.05)  # the next token in 1/20 s, not 1/10
    spent.reconfigure(20, 7, "fail")
    assert [spent.reserve(1.0) for _ in range(3)][:2] == [0.0, 0.0]

    full = RateLimiter(1, burst=3, mode="fail", clock=clock)
    full.reconfigure(2, 3, "wait")
    assert [full.reserve(1.0) for _ in range(3)] == [0.0] * 3
    assert full.reserve(1.0) == pytest.approx(0.5)  # wait mode now: booked half a second ahead


def test_a_retry_budget_keeps_its_window() -> None:
    """Ten requests seen stay counted; the new ratio judges them at once."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, window_seconds=10, min_per_second=0, clock=clock)
    for _ in range(10):
        budget.request()
    assert budget.balance == pytest.approx(2)
    budget.reconfigure(0.5, 10, 0)
    assert budget.balance == pytest.approx(5)
    assert budget.counts() == (10, 0)


def test_an_adaptive_limit_keeps_what_it_learned_within_the_new_range() -> None:
    """The limit and RTT averages stay; a range that excludes the limit moves it inside."""
    limit = Gradient2Limit(initial_limit=20, min_limit=1, max_limit=100)
    limit.sample(0.01, in_flight=20)
    learned, rtt = limit.limit, limit._long_rtt
    limit.reconfigure(20, 1, 200, smoothing=0.5, tolerance=2.0)
    assert (limit.limit, limit._long_rtt, limit.smoothing) == (learned, rtt, 0.5)
    limit.reconfigure(5, 5, 10, smoothing=0.5, tolerance=2.0)
    assert limit.limit == 10
    with pytest.raises(ValueError, match="min_limit"):
        limit.reconfigure(5, 6, 10, smoothing=0.5, tolerance=2.0)


async def test_hedging_keeps_its_latencies_and_a_call_in_flight_its_attempts() -> None:
    """The tracker's samples stay; a hedged call started with 3 attempts still makes 3 after max_attempts -> 2."""
    hedging = HedgingPolicy(delay_seconds=0.001, max_attempts=3)
    tracker = hedging.tracker
    started = 0
    done = asyncio.get_running_loop().create_future()

    async def attempt() -> str:
        nonlocal started
        started += 1
        if started == 1:
            hedging.reconfigure(0.001, 2, None)
        if started == 3:
            done.set_result("third")
        return await done

    async with asyncio.timeout(5):
        assert await hedging.run(attempt, lambda: True) == "third"
    assert (started, hedging.max_attempts, hedging.tracker) == (3, 2, tracker)


# -- a call in flight keeps what it started with -------------------------------------------


async def test_a_call_in_flight_keeps_its_attempt_timeout_and_retries() -> None:
    """Reconfigured while it retries, a call still makes 3 retries of 2 s each; the next call takes 0 retries of 0.5 s."""
    clock = FakeClock()
    retry = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01, jitter=False)
    pipeline = Pipeline(
        bulkhead=Bulkhead(), breaker=_breaker(clock), retry=retry, attempt_timeout=2.0, clock=clock
    )
    timeouts: list[float] = []

    async def attempt(timeout: float) -> None:
        timeouts.append(timeout)
        if len(timeouts) == 2:  # the first retry: the call has its retry policy since its first failure
            retry.reconfigure(0, 0.001, 0.01, 2.0, jitter=False, retry_on_status=frozenset({503}))
            pipeline.attempt_timeout = 0.5
        raise ClientTimeoutError("slow")

    with pytest.raises(ClientTimeoutError):
        await pipeline.execute(
            attempt, CallRecord("s", "GET", "e", ""), Deadline.after(clock, None), idempotent=True
        )
    assert timeouts == [2.0] * 4
    timeouts.clear()
    with pytest.raises(ClientTimeoutError):
        await pipeline.execute(
            attempt, CallRecord("s", "GET", "e", ""), Deadline.after(clock, None), idempotent=True
        )
    assert timeouts == [0.5]


# -- balancer ---------------------------------------------------------------------------


def test_a_balancer_keeps_its_instances_and_their_state() -> None:
    """New policy and thresholds: the same Instance objects with their EWMA; the next failure is judged by the new threshold."""
    clock = FakeClock()
    urls = [f"http://127.0.0.1:{9001 + i}/" for i in range(3)]
    balancer = Balancer(urls, BalancerSettings(consecutive_failures=5), clock=clock, rng=random.Random(1))
    first = balancer.pick()
    balancer.finished(first, "failure", 0.2)
    before = {i.url: (i, i.ewma) for i in balancer.instances}
    balancer.reconfigure(
        BalancerSettings(policy="round_robin", consecutive_failures=2, sweep_interval_seconds=1)
    )
    assert {i.url: (i, i.ewma) for i in balancer.instances} == before
    assert balancer.settings.policy == "round_robin"
    again = balancer.pick(tried=[u for u in urls if u != first.url])
    assert again is first
    balancer.finished(again, "failure", 0.2)
    assert first.ejected(clock.now())  # 2 in a row: the new threshold


def test_a_balancer_update_drains_removed_instances() -> None:
    """An instance with a call in flight drains: no new picks, gone (and its listener told) when the call ends."""
    clock = FakeClock()
    a, b = "http://127.0.0.1:9001/", "http://127.0.0.1:9002/"
    balancer = Balancer([a, b], clock=clock, rng=random.Random(1))
    removed: list[str] = []
    balancer.add_removal_listener(lambda i: removed.append(i.url))
    busy = balancer.pick(tried=[b])
    balancer.update([b])
    assert balancer.urls() == (b,)
    assert {balancer.pick().url for _ in range(5)} == {b}
    assert removed == []
    balancer.finished(busy, "success", 0.01)
    assert removed == [a]


# -- shared state ------------------------------------------------------------------------


def _state(clock: FakeClock) -> SharedState:
    settings = SharedStateSettings(url="redis://127.0.0.1:1/0")
    return SharedState(settings, clock=clock, registry=CollectorRegistry())


async def test_a_global_limit_takes_the_new_rate_and_its_local_fallback_keeps_its_tokens() -> None:
    """Redis unavailable: the local share (10/2 = 5/s) spent stays spent at the new share (20/2 = 10/s)."""
    clock = FakeClock()
    state = _state(clock)
    limiter = GlobalRateLimiter(state, "k", rate=10, burst=4, mode="fail", clock=clock)
    state._replicas = 2
    assert [(await limiter.reserve_slot(1.0))[0] for _ in range(2)] == [0.0, 0.0]
    limiter.reconfigure(20, 4, "fail")
    assert limiter._args == ("50000", "150000", "1")
    refused, _ = await limiter.reserve_slot(1.0)
    assert refused == pytest.approx(-0.1)


def test_a_shared_breaker_takes_the_new_quorum() -> None:
    """The quorum moves from a majority of those seen (at least 2) to the configured 3, and back."""
    clock = FakeClock()
    shared = SharedBreaker(_state(clock), _breaker(clock), "svc")
    assert shared.required() == 2
    shared.reconfigure(quorum=3)
    assert shared.required() == 3
    shared.reconfigure(quorum=None)
    assert shared.required() == 2


# -- ClientPolicies and what cannot change live --------------------------------------------


def _policies(clock: FakeClock, **fields: Any) -> ClientPolicies:
    config = ClientConfig(base_url=URL, service_name="live", **fields)
    return ClientPolicies.from_config(config, clock, families=MetricFamilies(CollectorRegistry()))


def test_client_policies_reconfigure_every_policy_in_place() -> None:
    """The same objects, the new values; the same config again changes nothing."""
    clock = FakeClock()
    policies = _policies(
        clock,
        rate_limit_per_second=10,
        retry_budget_enabled=True,
        hedging_enabled=True,
        enable_request_logging=True,
    )
    objects = [
        getattr(policies, f.name) for f in policies.__dataclass_fields__.values() if f.name != "config"
    ]
    new = policies.config.model_copy(  # type: ignore[union-attr]
        update={
            "circuit_breaker_failure_threshold": 7,
            "bulkhead_max_concurrent": 3,
            "bulkhead_max_waiting": 4,
            "max_retries": 1,
            "rate_limit_per_second": 20.0,
            "retry_budget_ratio": 0.5,
            "hedging_max_attempts": 3,
            "enable_request_logging": False,
        }
    )
    policies.reconfigure(new)
    assert [
        getattr(policies, f.name) for f in policies.__dataclass_fields__.values() if f.name != "config"
    ] == objects
    assert policies.config is new
    assert policies.breaker.failure_threshold == 7
    assert (policies.bulkhead.max_concurrent, policies.bulkhead.max_waiting) == (3, 4)
    assert policies.retry.max_retries == 1
    assert policies.rate_limiter is not None
    assert policies.rate_limiter.rate == 20
    assert policies.budget is not None
    assert policies.budget.ratio == 0.5
    assert policies.hedging is not None
    assert policies.hedging.max_attempts == 3
    assert policies.observer.log_calls is False
    policies.reconfigure(new.model_copy())  # equal: nothing to do
    assert policies.config is new


def test_an_adaptive_bulkhead_follows_the_adaptive_limit_within_the_new_max() -> None:
    """bulkhead_max_concurrent is the adaptive limit's max: lowering it to 5 clamps the limit and the bulkhead."""
    policies = _policies(
        FakeClock(), bulkhead_mode="adaptive", bulkhead_max_concurrent=50, adaptive_initial_limit=20
    )
    new = policies.config.model_copy(update={"bulkhead_max_concurrent": 5, "adaptive_initial_limit": 5})  # type: ignore[union-attr]
    policies.reconfigure(new)
    assert policies.adaptive is not None
    assert (policies.adaptive.current, policies.bulkhead.max_concurrent) == (5, 5)


def test_a_config_that_cannot_apply_live_is_refused_with_nothing_changed() -> None:
    """A new service_name with a new threshold: ValueError naming the field and its variable; the threshold stays."""
    policies = _policies(FakeClock(), circuit_breaker_failure_threshold=5)
    old = policies.config
    new = old.model_copy(update={"service_name": "renamed", "circuit_breaker_failure_threshold": 2})  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"service_name \(APP_UPSTREAMS__<NAME>__SERVICE_NAME\)"):
        policies.reconfigure(new)
    assert (policies.config, policies.breaker.failure_threshold) == (old, 5)
    unknown = dataclasses.replace(policies, config=None)
    with pytest.raises(ValueError, match="without a config"):
        unknown.reconfigure(old)  # type: ignore[arg-type]


def test_problems_name_each_field_that_cannot_change_live_and_its_variable() -> None:
    """Every NOT_LIVE field, rate limit on/off, one instance <-> several, and a single instance's base_url."""
    old = ClientConfig(base_url=URL, retry_budget_enabled=True)
    flipped: dict[str, Any] = {
        "service_name": "other",
        "enable_metrics": False,
        "retry_budget_enabled": False,
        "hedging_enabled": True,
        "bulkhead_mode": "adaptive",
        "circuit_breaker_shared": True,
        "retry_budget_scope": "global",
        "rate_limit_scope": "global",
        "cache_enabled": True,
        "cache_store": "redis",
        "cache_max_bytes": 4096,
    }
    assert set(flipped) == set(NOT_LIVE)
    for field, value in flipped.items():
        new = old.model_copy(update={field: value})
        [problem] = reconfigure_problems(old, new, "pricing")
        assert problem.startswith(
            f"{field} (APP_UPSTREAMS__PRICING__{field.upper()}) cannot change without a restart: "
        )
    limited = old.model_copy(update={"rate_limit_per_second": 5.0})
    assert [p.split(" ")[0] for p in reconfigure_problems(old, limited)] == ["rate_limit_per_second"]
    assert reconfigure_problems(limited, limited.model_copy(update={"rate_limit_per_second": 9.0})) == []
    moved = ClientConfig(base_url="http://127.0.0.1:10/api/v1")
    [problem] = reconfigure_problems(ClientConfig(base_url=URL), moved, env_name=lambda f: f"MY_{f.upper()}")
    assert problem.startswith("base_url (MY_BASE_URL)")
    fleet = ClientConfig(instances=[URL, "http://127.0.0.1:10/api/v1"])
    assert [p.split(" ")[0] for p in reconfigure_problems(ClientConfig(base_url=URL), fleet)] == ["instances"]
    other_fleet = ClientConfig(instances=["http://127.0.0.1:10/api/v1", "http://127.0.0.1:11/api/v1"])
    assert reconfigure_problems(fleet, other_fleet) == []  # base_url moves with the instances: fine


def test_what_changes_live_raises_no_problem() -> None:
    """Thresholds, timeouts, sizes, retries, rates, keys and logging flags all change live."""
    old = ClientConfig(base_url=URL, rate_limit_per_second=1.0, hedging_enabled=True)
    new = old.model_copy(
        update={
            "timeout_seconds": 1.0,
            "total_timeout_seconds": 5.0,
            "api_key": "k2",
            "max_retries": 0,
            "circuit_breaker_failure_threshold": 2,
            "circuit_breaker_mode": "failure_rate",
            "bulkhead_max_concurrent": 99,
            "rate_limit_per_second": 3.0,
            "hedging_delay_seconds": 0.5,
            "log_request_body": True,
            "max_response_bytes": 10,
            "follow_redirects": True,
        }
    )
    assert reconfigure_problems(old, new) == []


async def test_the_pool_follows_the_bulkhead_unless_sized_otherwise() -> None:
    """A session sized to the bulkhead (10) takes the new size (25); one sized otherwise keeps its own."""
    old = ClientConfig(base_url=URL, bulkhead_max_concurrent=10)
    new = old.model_copy(update={"bulkhead_max_concurrent": 25})
    transport = AiohttpTransport(old)
    session = transport._open({})  # type: ignore[arg-type]
    other = new_session(ClientConfig(base_url=URL, bulkhead_max_concurrent=7))
    try:
        transport.reconfigure(new)
        follow_bulkhead(other, old, new)
        assert session.connector is not None
        assert other.connector is not None
        assert (session.connector.limit, other.connector.limit) == (25, 7)
    finally:
        await transport.aclose()
        await other.close()
