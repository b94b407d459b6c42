"""Prometheus metrics of the service clients, pre-aggregated per call and exported at scrape time.

Label names follow OpenTelemetry's HTTP client semantic conventions where one exists,
written as Prometheus writes them (dots become underscores): ``peer_service``
(``peer.service``, the service called), ``http_request_method``, ``url_template`` (the
endpoint template, never the filled-in path) and ``http_response_status_code``
(empty when no response came). ``outcome``, ``reason``, ``from`` and ``to`` have no
convention. Family names are kept: a ``service_client_request_duration_seconds``
sample covers the whole logical call (retries and waits included), which is not what
the convention's per-request ``http.client.request.duration`` measures.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from collections.abc import Callable
from math import isnan
from threading import Lock, RLock
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from app.errors import Outcome, Rejection
from app.observability.metrics_collector import (
    Cell,
    PreAggregatedCounter,
    PreAggregatedHistogram,
    upper_bounds,
)

__all__ = [
    "BREAKER_STATE_VALUES",
    "Batched",
    "CALL_LABELS",
    "Calls",
    "ClientMetrics",
    "MetricFamilies",
    "PEER",
    "Refusals",
    "SERVER",
    "default_families",
]

#: ``service_client_circuit_state`` values.
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

#: The label naming the dependency on every family.
PEER = "peer_service"
#: The label naming one instance of it (``host:port``): OpenTelemetry's ``server.address``.
#: Not ``instance``, which Prometheus sets to the scraped target and would rename ours.
SERVER = "server_address"
#: The labels of ``service_client_requests_total``, in order.
CALL_LABELS = (PEER, "http_request_method", "url_template", "outcome", "http_response_status_code")
_ENDPOINT_LABELS = (PEER, "http_request_method", "url_template")

# Latency buckets for calls between services on one network: 1 ms to 30 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_UPPER_BOUNDS = upper_bounds(_BUCKETS)
#: Where a duration cell keeps its sum: after one count per bucket.
_SUM = len(_UPPER_BOUNDS)


#: A call tally's finished calls: (method, endpoint, outcome, status) -> [attempts in all,
#: then each call's seconds, in the order they ended].
Calls = dict[tuple[str, str, Outcome, int | None], list[float]]
#: A call tally's refused calls: (method, endpoint, reason, outcome) -> how many.
Refusals = dict[tuple[str, str, Rejection, Outcome], int]


class Batched(Protocol):
    """Adds to some families' cells in batches, and can add what it holds now."""

    def settle(self) -> None:
        """Add everything held so far."""


class _Batches:
    """The sources adding to some families in batches (held weakly); calling it settles them all."""

    __slots__ = ("_lock", "_sources")

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[Batched] = weakref.WeakSet()
        self._lock = Lock()  # a WeakSet is not safe to copy while another thread adds

    def add(self, source: Batched) -> None:
        """Settle ``source`` too from now on."""
        with self._lock:
            self._sources.add(source)

    def __call__(self) -> None:
        """Have every source add what it holds."""
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            source.settle()


class MetricFamilies:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # The families a call touches (requests, duration, attempts, retries, rejections,
        # hedges, fallbacks) are pre-aggregated: plain numbers per series, exported by their
        # own collect() at scrape time. Each is registered where its prometheus_client
        # predecessor was, so /metrics lists the families in the same order.
        self.requests = PreAggregatedCounter(
            "service_client_requests", "Logical calls to a dependency, by outcome", CALL_LABELS, registry
        )
        self.duration = PreAggregatedHistogram(
            "service_client_request_duration_seconds",
            "Duration of a logical call, retries and waits included",
            _ENDPOINT_LABELS,
            registry,
            buckets=_BUCKETS,
        )
        self.attempts = PreAggregatedCounter(
            "service_client_attempts", "Attempts sent", _ENDPOINT_LABELS, registry
        )
        self.retries = PreAggregatedCounter(
            "service_client_retries", "Retries, by what failed", [PEER, "reason"], registry
        )
        self.circuit_state = Gauge(
            "service_client_circuit_state",
            "0 closed, 1 half-open, 2 open",
            [PEER],
            registry=registry,
        )
        self.circuit_transitions = Counter(
            "service_client_circuit_transitions",
            "Breaker state changes",
            [PEER, "from", "to"],
            registry=registry,
        )
        self.bulkhead_in_flight = Gauge(
            "service_client_bulkhead_in_flight",
            "Calls holding a bulkhead slot",
            [PEER],
            registry=registry,
        )
        self.bulkhead_queued = Gauge(
            "service_client_bulkhead_queued",
            "Calls waiting for a bulkhead slot",
            [PEER],
            registry=registry,
        )
        self.bulkhead_limit = Gauge(
            "service_client_bulkhead_limit",
            "Concurrency limit (the adaptive limit when on)",
            [PEER],
            registry=registry,
        )
        self.bulkhead_rejections = PreAggregatedCounter(
            "service_client_bulkhead_rejections", "Calls refused by a full bulkhead", [PEER], registry
        )
        self.rejections = PreAggregatedCounter(
            "service_client_rejections",
            "Calls refused before or between attempts, by reason",
            [PEER, "reason"],
            registry,
        )
        self.hedges = PreAggregatedCounter(
            "service_client_hedges", "Hedged (backup) attempts started", [PEER], registry
        )
        self.fallbacks = PreAggregatedCounter(
            "service_client_fallbacks", "Calls answered by their fallback", [PEER], registry
        )
        # One upstream's instances (DESIGN §9), by ``server_address`` (``host:port``); past a cap
        # per upstream (app/observability/instances.py) further instances share "other".
        self.instance_attempts = Counter(
            "service_client_instance_attempts",
            "Attempts by instance and how they ended (success, error, failure, throttled, cancelled)",
            [PEER, SERVER, "outcome"],
            registry=registry,
        )
        self.instance_ejections = Counter(
            "service_client_instance_ejections",
            "Instances ejected by outlier detection, by reason",
            [PEER, SERVER, "reason"],
            registry=registry,
        )
        self.instances = Gauge(
            "service_client_instances",
            "Instances of the upstream by state (healthy, ejected, draining)",
            [PEER, "state"],
            registry=registry,
        )
        self.instance_ewma = Gauge(
            "service_client_instance_ewma_seconds",
            "Each instance's peak-EWMA round trip, as the balancer sees it",
            [PEER, SERVER],
            registry=registry,
        )
        # OAuth2 client credentials (DESIGN §9): the upstream's token endpoint, never the token.
        self.token_fetches = Counter(
            "service_client_token_fetches",
            "Token requests for calls to a dependency, by outcome (success, or how the last attempt failed)",
            [PEER, "outcome"],
            registry=registry,
        )
        # Typed contracts (DESIGN §9): answers let through by ``response_validation="lax"``.
        self.invalid_answers = Counter(
            "service_client_invalid_answers",
            "Answers that did not match their model and were let through (lax validation)",
            _ENDPOINT_LABELS,
            registry=registry,
        )
        # The response cache (DESIGN §9), by how each cached call was answered.
        self.cache_lookups = Counter(
            "service_client_cache_lookups",
            "Cached calls by result: hit, miss, revalidated (a 304), stale (served stale "
            "while revalidating), stale_if_error (served stale for a failed upstream), bypass",
            [PEER, "result"],
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "service_client_cache_bytes",
            "Bytes the dependency's response cache holds (this process's memory store; "
            "for Redis, the bytes this process wrote)",
            [PEER],
            registry=registry,
        )
        self.cache_stores = Counter(
            "service_client_cache_stores",
            "Responses stored in the cache, and responses not stored, by reason",
            [PEER, "result"],
            registry=registry,
        )
        self.token_expiry = Gauge(
            "service_client_token_expiry_seconds",
            "Seconds until the dependency's current token expires (0 without one)",
            [PEER],
            registry=registry,
        )
        self._locks: dict[str, RLock] = {}
        self._locks_mutex = Lock()
        # Whoever adds to these families' cells in batches (a client's call tally),
        # settled before each of them is read, alone or in a scrape: every call so far is
        # seen. Not this object's bound method on each family: families and family would
        # be a reference cycle, left for the gc with everything they hold.
        self._batches = _Batches()
        for family in (
            self.requests,
            self.duration,
            self.attempts,
            self.bulkhead_rejections,
            self.rejections,
            self.fallbacks,
        ):
            family.before_collect = self._batches

    def batching(self, source: Batched) -> None:
        """Settle ``source`` (held weakly) before every scrape of the families it adds to."""
        self._batches.add(source)

    def lock(self, service: str) -> RLock:
        """The lock held while adding to ``service``'s pre-aggregated series (one per service).

        Re-entrant: a client's observer dropped unsettled adds its counts from its
        ``__del__``, which the gc may run in this very thread inside a region holding it
        (a collection starts at any allocation of a tracked object). The regions that
        write cells make no such allocation, so such a nested add lands between them.
        """
        with self._locks_mutex:
            found = self._locks.get(service)
            if found is None:
                found = self._locks[service] = RLock()
            return found


_families: dict[int, MetricFamilies] = {}


def default_families(registry: CollectorRegistry = REGISTRY) -> MetricFamilies:
    """The families on ``registry``, created on first use (one set per registry)."""
    families = _families.get(id(registry))
    if families is None:
        families = _families[id(registry)] = MetricFamilies(registry)
    return families


class ClientMetrics:
    """One client's view of the families: its series' cells are found once and reused.

    A call adds to plain numbers (``cell[0] += 1``, a bucket found by ``bisect``) under
    one lock; the families export them at scrape time. prometheus_client's children cost
    a lock per value and a Python loop over the buckets: ``call()`` took ~23k instructions
    with them, ~6k now (callgrind, the Python call itself included; issue 16).
    """

    __slots__ = (
        "_calls",
        "_fallbacks",
        "_hedges",
        "_lock",
        "_refusals",
        "_refused",
        "_rejections",
        "_retries",
        "families",
        "service",
    )

    def __init__(self, service: str, families: MetricFamilies) -> None:
        self.service = service
        self.families = families
        # Why a lock, and one per service: ``cell[i] += n`` is a load, an add and a store,
        # and the sync twins call from their own event-loop thread, so two threads may add
        # to one cell (clients of one service share their series); without the lock an
        # increment can be lost (certainly on free-threaded builds, and the GIL promises
        # nothing either). One uncontended acquire/release covers a whole call's updates
        # (count, bucket, sum, attempts: all in this service's series) and lets a scrape
        # read a histogram's buckets and sum as one. Per service rather than per client,
        # since clients of the same service write the same cells. Taken with acquire() and
        # try/finally rather than ``with``: ~0.9k instructions against ~2k (``with`` makes
        # two bound methods and calls __exit__ with three arguments); a try costs nothing
        # in 3.11 until it raises, and it keeps a bad argument from leaving the lock held.
        self._lock = families.lock(service)
        # (method, endpoint, outcome, status) -> the cells of a call with attempts:
        # its requests counter, its endpoint's duration histogram and attempts counter.
        self._calls: dict[tuple[str, str, str, int | None], tuple[Cell, Cell, Cell]] = {}
        # The same key -> the requests cell of a call refused before any attempt (its
        # endpoint gets no duration series, as before).
        self._refusals: dict[tuple[str, str, str, int | None], Cell] = {}
        self._retries: dict[str, Cell] = {}
        self._rejections: dict[str, tuple[Cell, ...]] = {}
        # (method, endpoint, reason, outcome) -> every cell a refusal adds one to.
        self._refused: dict[tuple[str, str, str, str], tuple[Cell, ...]] = {}
        self._hedges: Cell | None = None
        self._fallbacks: Cell | None = None

    def call(  # noqa: PLR0917 - once per call: the observer passes them by position, the cheapest
        self,
        method: str,
        endpoint: str,
        outcome: Outcome,
        status: int | None,
        seconds: float,
        attempts: int,
    ) -> None:
        """Count one finished logical call."""
        if attempts:
            self.finished(method, endpoint, outcome, status, [seconds], attempts)
            return
        # Refused before any attempt: no upstream latency to report.
        key = (method, endpoint, outcome, status)
        refused = self._refusals.get(key)
        if refused is None:
            refused = self._refusals[key] = self._requests_cell(key)
        lock = self._lock
        lock.acquire()
        try:
            refused[0] += 1
        finally:
            lock.release()

    def add(self, calls: Calls, refusals: Refusals) -> None:
        """A call tally's counts (see ``CallTally``): finished calls, then refused ones, by kind."""
        for (method, endpoint, outcome, status), entry in calls.items():
            latencies = entry[1:]
            self.finished(method, endpoint, outcome, status, latencies, int(entry[0]))
            if outcome == "fallback":
                self.fallback(len(latencies))
        for (method, endpoint, reason, outcome), count in refusals.items():
            self.refused(method, endpoint, reason, outcome, count)
            if outcome == "fallback":
                self.fallback(count)

    def finished(  # noqa: PLR0917 - the tally's batch, by position as call()'s
        self,
        method: str,
        endpoint: str,
        outcome: Outcome,
        status: int | None,
        latencies: list[float],
        attempts: int,
    ) -> None:
        """Count ``len(latencies)`` finished calls of one kind that sent ``attempts`` attempts in all.

        ``latencies`` holds each call's seconds, in the order the calls ended: the
        observer's tally adds a second's worth at a time (see ``CallTally``). The
        histogram gets what each call's own update gave it: prometheus_client puts a
        value in the first bucket whose bound is >= it, so the calls at or below each
        bound are ``bisect_right`` of the sorted seconds; the sum adds them in call order.
        A NaN (a custom clock's) goes in no bucket and into the sum, as prometheus_client's.

        Under the lock nothing is made that the gc tracks (only ints, floats and range
        iterators): a collection cannot start there and run a finalizer that wants it.
        """
        key = (method, endpoint, outcome, status)
        cells = self._calls.get(key)
        if cells is None:
            cells = self._calls[key] = self._call_cells(key)
        requests, duration, sent = cells
        ordered = sorted([seconds for seconds in latencies if not isnan(seconds)])
        at_or_below = [bisect_right(ordered, bound) for bound in _UPPER_BOUNDS]
        lock = self._lock
        lock.acquire()
        try:
            requests[0] += len(latencies)
            below = 0
            for bucket in range(_SUM):
                count = at_or_below[bucket]
                duration[bucket] += count - below
                below = count
            total = duration[_SUM]
            for at in range(len(latencies)):
                total += latencies[at]  # in call order: the float adding each in turn gave
            duration[_SUM] = total
            sent[0] += attempts
        finally:
            lock.release()

    def _requests_cell(self, key: tuple[str, str, str, int | None]) -> Cell:
        method, endpoint, outcome, status = key
        labels = (self.service, method, endpoint, outcome, "" if status is None else str(status))
        return self.families.requests.series(labels, self._lock)

    def _call_cells(self, key: tuple[str, str, str, int | None]) -> tuple[Cell, Cell, Cell]:
        # In the order prometheus_client made these children (requests, duration, attempts),
        # so each family's series keep their order of first appearance.
        requests = self._requests_cell(key)
        endpoint = (self.service, key[0], key[1])
        return (
            requests,
            self.families.duration.series(endpoint, self._lock),
            self.families.attempts.series(endpoint, self._lock),
        )

    def retry(self, reason: Outcome) -> None:
        """Count one retry, by the outcome of the attempt that failed."""
        cell = self._retries.get(reason)
        if cell is None:
            cell = self._retries[reason] = self.families.retries.series((self.service, reason), self._lock)
        self._add_one((cell,))

    def rejection(self, reason: Rejection) -> None:
        """Count a call refused by a policy (breaker_open, bulkhead_full, rate_limited, budget_exhausted)."""
        cells = self._rejections.get(reason)
        if cells is None:
            cells = (self.families.rejections.series((self.service, reason), self._lock),)
            if reason == "bulkhead_full":
                cells += (self.families.bulkhead_rejections.series((self.service,), self._lock),)
            self._rejections[reason] = cells
        self._add_one(cells)

    def refused(
        self, method: str, endpoint: str, reason: Rejection, outcome: Outcome, count: int = 1
    ) -> None:
        """``count`` calls refused before they started: each a ``rejection(reason)`` and an attemptless call.

        While a dependency is down the observer tallies its refusals and adds them here
        a second's worth at a time (and before every scrape): one lookup and one lock for
        both families' cells, made in the order the two methods would have made them.
        """
        key = (method, endpoint, reason, outcome)
        cells = self._refused.get(key)
        if cells is None:
            self.rejection(reason)  # makes the rejection cells first, as before
            self.call(method, endpoint, outcome=outcome, status=None, seconds=0.0, attempts=0)
            cells = self._refused[key] = (
                *self._rejections[reason],
                self._refusals[(method, endpoint, outcome, None)],
            )
            count -= 1  # the two calls above counted one
        with self._lock:  # once a second, not once a refusal: the plain spelling
            for at in range(len(cells)):  # a range, not the tuple's iterator: see MetricFamilies.lock
                cells[at][0] += count

    def circuit(self, state: str) -> None:
        """Set the breaker-state gauge (also at start, so a healthy dependency shows as 0)."""
        self.families.circuit_state.labels(self.service).set(BREAKER_STATE_VALUES[state])

    def transition(self, old: str, new: str) -> None:
        """Record a breaker state change."""
        self.circuit(new)
        self.families.circuit_transitions.labels(self.service, old, new).inc()

    def hedge(self) -> None:
        """Count a hedged attempt."""
        cell = self._hedges
        if cell is None:
            cell = self._hedges = self.families.hedges.series((self.service,), self._lock)
        self._add_one((cell,))

    def fallback(self, count: int = 1) -> None:
        """Count ``count`` calls answered by their fallback."""
        cell = self._fallbacks
        if cell is None:
            cell = self._fallbacks = self.families.fallbacks.series((self.service,), self._lock)
        lock = self._lock
        lock.acquire()
        try:
            cell[0] += count
        finally:
            lock.release()

    def _add_one(self, cells: tuple[Cell, ...]) -> None:
        """One more in each of ``cells``, under the service's lock.

        ``call`` and ``refused``, the per-call ones, do the same inline: a method call
        fewer on the hot path.
        """
        lock = self._lock
        lock.acquire()
        try:
            for at in range(len(cells)):  # a range, not the tuple's iterator: see MetricFamilies.lock
                cells[at][0] += 1
        finally:
            lock.release()

    def invalid_answer(self, method: str, endpoint: str) -> None:
        """Count an answer let through that did not match its model."""
        self.families.invalid_answers.labels(self.service, method, endpoint).inc()

    def watch(
        self,
        in_flight: Callable[[], float],
        queued: Callable[[], float],
        limit: Callable[[], float],
    ) -> None:
        """Read the bulkhead's gauges at scrape time, at no cost per call."""
        self.families.bulkhead_in_flight.labels(self.service).set_function(in_flight)
        self.families.bulkhead_queued.labels(self.service).set_function(queued)
        self.families.bulkhead_limit.labels(self.service).set_function(limit)
