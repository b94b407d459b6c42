"""The observer's call tally: finished and refused calls counted a second at a time, exact whenever read."""

from __future__ import annotations

import gc
import math
import sys
import threading
import weakref
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Histogram

from app.clients import BaseServiceClient, ClientConfig
from app.clients.policies import ClientPolicies
from app.clients.testing import FakeClock
from app.errors import BulkheadFullError, CircuitBreakerOpenError, ClientError, ServerError
from app.observability.metrics import MetricFamilies
from app.observability.observer import CallObserver
from app.observability.rolling import RollingStats
from app.observability.tally import HELD_PER_KIND
from app.resilience.pipeline import CallRecord
from tests.support.threads import race

OPEN = CircuitBreakerOpenError(service_name="up", method="GET", endpoint="x", attempts=0)
FULL = BulkheadFullError(service_name="up", method="GET", endpoint="x", attempts=0)


def _observer(clock: FakeClock, registry: CollectorRegistry) -> CallObserver:
    return CallObserver("up", log_calls=False, families=MetricFamilies(registry), clock=clock)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"peer_service": "up", **labels}) or 0.0


def _freed_by_its_count(made: Callable[[], object]) -> bool:
    """Whether what ``made`` returns (its only reference) is freed once dropped, with the gc off."""
    gc.disable()
    try:
        gone = weakref.ref(made())
        return gone() is None
    finally:
        gc.enable()


def _refuse(observer: CallObserver, error: ClientError, n: int, *, fallback: bool = False) -> None:
    reason = "breaker_open" if error is OPEN else "bulkhead_full"
    for _ in range(n):
        observer.refused("GET", "x", reason, error, fallback=fallback)


def _finish(
    observer: CallObserver,
    seconds: float,
    status: int | None = 200,
    attempts: int = 1,
    error: ClientError | None = None,
    endpoint: str = "x",
) -> None:
    record = CallRecord("up", "GET", endpoint, "rid")
    record.attempts, record.status = attempts, status
    observer.call_ended(record, seconds, error)


#: Durations on and around the histogram's bounds (prometheus_client puts a value equal
#: to a bound in that bound's bucket), below the first, past the last, and in between.
DURATIONS = [
    0.0,
    0.0004,
    0.001,
    0.0010001,
    0.0025,
    0.003,
    0.1,
    0.1 + 1e-12,
    0.7,
    1.0,
    29.9,
    30.0,
    31.0,
    500.0,
]
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION = "service_client_request_duration_seconds"
ENDPOINT = {"http_request_method": "GET", "url_template": "x"}


def _histogram(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> dict[str, float]:
    """A histogram's bucket counts (by ``le``), count and sum in ``registry``."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if (
                sample.name.startswith(name)
                and not sample.name.endswith("_created")
                and all(sample.labels.get(k) == v for k, v in labels.items())
            ):
                out[sample.labels.get("le", sample.name.rpartition("_")[2])] = sample.value
    return out


def test_a_seconds_batch_counts_as_each_call_updating_the_histogram_would() -> None:
    """Buckets, count and sum (the same float) of a second's calls: prometheus_client's Histogram fed each in turn."""
    clock, registry = FakeClock(1000.0), CollectorRegistry()
    observer = _observer(clock, registry)
    reference = CollectorRegistry()
    each = Histogram("ref", "each call observed", buckets=BUCKETS, registry=reference)
    for seconds in [*DURATIONS, *reversed(DURATIONS), 0.123456789, 1 / 3, 0.1 + 0.2]:
        _finish(observer, seconds, attempts=2)
        each.observe(seconds)
    expected = _histogram(reference, "ref", {})
    assert _histogram(registry, DURATION, ENDPOINT) == expected  # the scrape settles the second first
    assert _sample(registry, "service_client_attempts_total", **ENDPOINT) == 2 * expected["count"]
    _finish(observer, 0.002)  # the same second, after a scrape settled it: added, not lost or doubled
    each.observe(0.002)
    assert _histogram(registry, DURATION, ENDPOINT) == _histogram(reference, "ref", {})
    requests = {"outcome": "success", "http_response_status_code": "200", **ENDPOINT}
    assert _sample(registry, "service_client_requests_total", **requests) == expected["count"] + 1


def test_calls_of_several_kinds_in_one_second_are_each_counted_in_their_series() -> None:
    """Outcomes and statuses apart, each counted; the endpoint's histogram has them all; stats see them too."""
    clock, registry = FakeClock(1000.0), CollectorRegistry()
    observer = _observer(clock, registry)
    for seconds in DURATIONS:
        _finish(observer, seconds)
        _finish(observer, seconds / 2, status=503, attempts=3, error=ServerError("HTTP 503", status=503))
    _finish(observer, 0.01, status=None, error=ServerError("reset", status=None))
    requests = "service_client_requests_total"
    assert _sample(registry, requests, outcome="success", http_response_status_code="200", **ENDPOINT) == 14
    assert (
        _sample(registry, requests, outcome="server_error", http_response_status_code="503", **ENDPOINT) == 14
    )
    assert _sample(registry, requests, outcome="server_error", http_response_status_code="", **ENDPOINT) == 1
    histogram = _histogram(registry, DURATION, ENDPOINT)
    assert histogram["count"] == 29
    assert histogram["sum"] == pytest.approx(sum(DURATIONS) * 1.5 + 0.01)  # kinds summed apart: to rounding
    assert _sample(registry, "service_client_attempts_total", **ENDPOINT) == 14 + 14 * 3 + 1
    snap = observer.stats.snapshot()
    assert (snap["counts"]["success"], snap["counts"]["server_error"]) == (14, 15)
    assert snap["latency_ms"]["max"] == 500_000.0


def test_finished_calls_land_in_their_own_second() -> None:
    """Each second's calls settle into its bucket when the next second starts, or when read, in time order."""
    clock = FakeClock(1000.0)
    observer = _observer(clock, CollectorRegistry())
    _finish(observer, 0.01)
    _finish(observer, 0.03)
    clock.advance(1)
    _finish(observer, 0.02)  # second 1001 starts: 1000's tally goes in first
    _refuse(observer, OPEN, 2)
    clock.advance(2)
    _finish(observer, 0.05)
    snap = observer.stats.snapshot()  # 1003's call is still in the tally: the read settles it
    assert [point["requests"] for point in snap["series"][-4:]] == [2, 3, 0, 1]
    assert [point["p90_ms"] for point in snap["series"][-4:]] == [30.0, 20.0, None, 50.0]
    assert snap["counts"]["success"] == 4


def test_a_buckets_latency_samples_stay_bounded_when_added_in_batches() -> None:
    """RollingStats.finished keeps at most its samples per bucket, and counts every call."""
    stats = RollingStats(clock=FakeClock(1000.0))
    stats.finished("success", [0.001] * 1500, 1000)
    stats.finished("success", [0.002] * 1500, 1000)
    assert sum(b.outcomes["success"] for b in stats._buckets) == 3000
    assert len(stats._buckets[0].latencies) == 2048


def test_finished_calls_without_metrics_still_reach_the_stats() -> None:
    """Metrics off: the tally settles into the rolling stats alone."""
    observer = CallObserver("up", metrics=False, log_calls=False, clock=FakeClock())
    _finish(observer, 0.01)
    assert observer.stats.snapshot()["counts"]["success"] == 1


def test_a_scrape_within_the_second_sees_every_refusal() -> None:
    """Nothing has settled the second yet: the scrape itself does, and counts each family exactly."""
    clock, registry = FakeClock(), CollectorRegistry()
    observer = _observer(clock, registry)
    _refuse(observer, OPEN, 7)
    _refuse(observer, FULL, 3)
    _refuse(observer, OPEN, 2, fallback=True)
    requests = "service_client_requests_total"
    base = {"http_request_method": "GET", "url_template": "x", "http_response_status_code": ""}
    assert _sample(registry, requests, outcome="short_circuited", **base) == 7
    assert _sample(registry, requests, outcome="rejected", **base) == 3
    assert _sample(registry, requests, outcome="fallback", **base) == 2
    assert _sample(registry, "service_client_rejections_total", reason="breaker_open") == 9
    assert _sample(registry, "service_client_rejections_total", reason="bulkhead_full") == 3
    assert _sample(registry, "service_client_bulkhead_rejections_total") == 3
    assert _sample(registry, "service_client_fallbacks_total") == 2
    _refuse(observer, OPEN, 1)  # same second, after a scrape settled it: added, not lost or doubled
    assert _sample(registry, requests, outcome="short_circuited", **base) == 8
    assert observer.stats.snapshot()["rejections"] == 13


def test_each_second_lands_in_its_own_bucket_even_after_later_calls() -> None:
    """A second's tally settled after a later second's calls were recorded still goes into its own second."""
    clock = FakeClock(1000.0)
    observer = _observer(clock, CollectorRegistry())
    _refuse(observer, OPEN, 4)  # second 1000, still in the tally
    clock.advance(2)
    observer.stats.record("success", 0.01)  # second 1002 recorded first
    clock.advance(1)  # 1003
    snap = observer.stats.snapshot()
    assert [point["requests"] for point in snap["series"][-4:]] == [4, 0, 1, 0]
    assert snap["counts"]["short_circuited"] == 4
    _refuse(observer, FULL, 2)  # 1003: a new second settles nothing left over, and counts these
    clock.advance(0.5)
    _refuse(observer, FULL, 1)
    assert [point["requests"] for point in observer.stats.snapshot()["series"][-4:]] == [4, 0, 1, 3]


def test_a_bucket_is_made_in_its_place_or_not_at_all() -> None:
    """RollingStats.refused for an older second: inserted in time order; past the window, dropped."""
    clock = FakeClock(1000.0)
    stats = RollingStats(window=10, clock=clock)
    stats.record("success", 0.01)
    clock.advance(4)
    stats.record("success", 0.01)  # buckets 1000 and 1004
    stats.refused("short_circuited", 5, 1002)
    stats.refused("short_circuited", 2, 1004)
    stats.refused("short_circuited", 9, 994)  # 1004 - 10: out of the window already
    assert [b.second for b in stats._buckets] == [1000, 1002, 1004]
    snap = stats.snapshot()
    assert [point["requests"] for point in snap["series"][-5:]] == [1, 0, 5, 0, 3]
    assert snap["rejections"] == 7


def test_calls_from_two_threads_while_scraping_are_all_counted() -> None:
    """The sync twins call from their own loop's thread: nothing lost to a scrape or the other thread.

    Without the tally's lock, a settle that took the counts in more than one step loses
    some here (checked: 100 to 500 of 40,000).
    """
    registry = CollectorRegistry()
    observer = CallObserver("up", log_calls=False, families=MetricFamilies(registry))  # the real clock
    per_thread = 20_000

    def scrape() -> None:
        registry.get_sample_value(
            "service_client_rejections_total", {"peer_service": "up", "reason": "breaker_open"}
        )

    def both(n: int) -> None:  # finished calls and refusals, one tally
        for _ in range(n):
            _refuse(observer, OPEN, 1)
            _finish(observer, 0.001)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can: a scrape lands mid-refusal
    try:
        race([lambda: both(per_thread)] * 2, scrape)
    finally:
        sys.setswitchinterval(switch)
    total = 2 * per_thread
    assert _sample(registry, "service_client_rejections_total", reason="breaker_open") == total
    assert observer.stats.snapshot()["counts"]["short_circuited"] == total
    assert observer.stats.snapshot()["counts"]["success"] == total
    assert _sample(registry, f"{DURATION}_count", **ENDPOINT) == total


def _isolated_client(registry: CollectorRegistry) -> BaseServiceClient:
    """A client whose breaker is held open, its metrics in ``registry``."""
    config = ClientConfig(base_url="http://127.0.0.1:9/api", service_name="up", enable_request_logging=False)
    client = BaseServiceClient(
        config, policies=ClientPolicies.from_config(config, families=MetricFamilies(registry))
    )
    client.breaker.isolate()
    return client


async def test_a_closed_client_leaves_its_last_refusals_in_the_metrics() -> None:
    """close() settles the tally: the counts are there once the client is gone, with no scrape before."""
    registry = CollectorRegistry()
    client = _isolated_client(registry)
    for _ in range(3):
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("x")
    await client.close()
    gone = weakref.ref(client.observer)
    del client
    gc.collect()
    assert gone() is None  # no scrape can settle it now
    assert _sample(registry, "service_client_rejections_total", reason="breaker_open") == 3


def test_a_closed_sync_client_leaves_its_last_refusals_in_the_metrics() -> None:
    """close_sync() settles the tally too."""
    registry = CollectorRegistry()
    client = _isolated_client(registry)
    for _ in range(2):
        with pytest.raises(CircuitBreakerOpenError):
            client.get_sync("x")
    client.close_sync()
    del client
    gc.collect()
    assert _sample(registry, "service_client_rejections_total", reason="breaker_open") == 2


def test_an_observer_dropped_unsettled_still_counts_its_refusals() -> None:
    """No close, no read since: what its tally held is added as the observer goes."""
    registry = CollectorRegistry()
    observer = _observer(FakeClock(), registry)
    _refuse(observer, FULL, 5)
    del observer
    gc.collect()
    assert _sample(registry, "service_client_bulkhead_rejections_total") == 5


def test_a_clock_gone_back_counts_in_the_second_it_reads() -> None:
    """A driven clock set back: the refusals after it go into their own (earlier) second, not the later one."""
    clock = FakeClock(1005.0)
    observer = _observer(clock, CollectorRegistry())
    _refuse(observer, OPEN, 1)
    clock.t = 1000.0
    _refuse(observer, OPEN, 3)
    snap = observer.stats.snapshot()
    assert snap["series"][-1]["requests"] == 3  # second 1000
    assert snap["counts"]["short_circuited"] == 4


def test_the_tally_keeps_no_observer_alive() -> None:
    """The stats' read hook and the families' list hold the observer weakly: it goes with its last reference."""

    def made() -> CallObserver:
        observer = _observer(FakeClock(), CollectorRegistry())
        _refuse(observer, OPEN, 3)
        assert observer.stats.snapshot()["rejections"] == 3
        return observer

    assert _freed_by_its_count(made)  # no cycle for the collector to find


def test_the_families_settling_hook_makes_no_cycle() -> None:
    """A registry's families, with an observer batching into them, go with their last reference."""

    def made() -> MetricFamilies:
        families = MetricFamilies(CollectorRegistry())
        _refuse(CallObserver("up", families=families), OPEN, 1)
        return families

    assert _freed_by_its_count(made)  # each family's hook holds the sources, not the families


def test_an_observer_in_a_cycle_goes_with_its_families_in_one_collection() -> None:
    """Settling a dropped observer holds nothing back: its families' cycles go in the same gc pass."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    observer = CallObserver("up", families=families)
    assert observer.metrics is not None
    observer.metrics.watch(lambda: 1, lambda: 2, lambda: 3)  # gauge functions: prometheus_client's own cycles
    observer.itself = observer  # type: ignore[attr-defined] - a cycle, as a client's breaker listener makes
    _refuse(observer, OPEN, 2)
    del registry, families, observer
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        left = sorted(
            {
                type(obj).__name__
                for obj in gc.garbage
                if type(obj).__module__.startswith(("app.", "prometheus"))
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


def test_each_family_read_alone_sees_the_seconds_calls() -> None:
    """The histogram and the attempts counter settle the tally too when collected without the others."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    observer = CallObserver("up", log_calls=False, families=families, clock=FakeClock(1000.0))
    _finish(observer, 0.01, attempts=2)
    (duration,) = families.duration.collect()
    assert [s.value for s in duration.samples if s.name.endswith("_count")] == [1.0]
    _finish(observer, 0.02, attempts=3)
    (attempts,) = families.attempts.collect()
    assert [s.value for s in attempts.samples if s.name.endswith("_total")] == [5.0]
    restricted = registry.restricted_registry([f"{DURATION}_count"])  # a filtered scrape (?name[]=)
    _finish(observer, 0.03)
    counts = [s.value for m in restricted.collect() for s in m.samples if s.name == f"{DURATION}_count"]
    assert counts == [3.0]


def test_a_nan_duration_goes_in_no_bucket_and_moves_no_other() -> None:
    """As prometheus_client's Histogram: the NaN (a custom clock's) only in the sum; the rest where they belong."""
    registry, reference = CollectorRegistry(), CollectorRegistry()
    observer = _observer(FakeClock(1000.0), registry)
    each = Histogram("ref", "each call observed", buckets=BUCKETS, registry=reference)
    for seconds in (0.5, math.nan, 0.002, 3.0, 0.0001):
        _finish(observer, seconds)
        each.observe(seconds)
    got, expected = _histogram(registry, DURATION, ENDPOINT), _histogram(reference, "ref", {})
    assert math.isnan(got.pop("sum"))
    assert math.isnan(expected.pop("sum"))
    assert got == expected


def test_a_busy_second_is_settled_in_slices() -> None:
    """Past HELD_PER_KIND calls of a kind the tally settles within the second: what one call sorts stays small."""
    observer = _observer(FakeClock(1000.0), CollectorRegistry())
    for _ in range(HELD_PER_KIND * 2 + 5):
        _finish(observer, 0.001)
        assert len(observer._tally.calls.get(("GET", "x", "success", 200), [0])) <= HELD_PER_KIND + 1
    assert observer.stats.snapshot()["counts"]["success"] == HELD_PER_KIND * 2 + 5


def _in_a_thread(work: Callable[[], None]) -> bool:
    """Whether ``work`` finished (in a thread of its own) within a few seconds: False is a hang."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=5)
    return not thread.is_alive()


def test_an_observer_collected_inside_its_services_lock_adds_its_counts_without_a_hang() -> None:
    """The gc may run a dropped observer's __del__ where this thread holds the service's metrics lock."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)

    def work() -> None:
        dropped = CallObserver("up", log_calls=False, families=families, clock=FakeClock(1000.0))
        dropped.itself = dropped  # type: ignore[attr-defined] - in a cycle: only the gc frees it
        _finish(dropped, 0.01)
        _refuse(dropped, OPEN, 2)
        del dropped
        with families.lock("up"):  # as ClientMetrics holds it while adding to the cells
            gc.collect()  # a collection that started at an allocation in there

    assert _in_a_thread(work)
    assert _sample(registry, f"{DURATION}_count", **ENDPOINT) == 1
    assert _sample(registry, "service_client_rejections_total", reason="breaker_open") == 2


def test_an_observer_collected_while_its_own_tally_is_held_does_not_hang() -> None:
    """Its tally's lock held in this thread (a settle the gc interrupted): __del__ leaves it to that settle."""
    registry = CollectorRegistry()

    def work() -> None:
        dropped = _observer(FakeClock(1000.0), registry)
        dropped.itself = dropped  # type: ignore[attr-defined]
        _finish(dropped, 0.01)
        lock = dropped._tally.lock
        del dropped
        with lock:
            gc.collect()

    assert _in_a_thread(work)
