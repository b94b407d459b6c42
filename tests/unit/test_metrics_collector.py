"""The pre-aggregated client families export exactly what prometheus_client's own did, from any thread."""

from __future__ import annotations

import gc
import random
import re
import sys
import threading
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics

from app.observability.metrics import PEER, ClientMetrics, MetricFamilies, default_families
from tests.support.threads import race

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ENDPOINT = (PEER, "http_request_method", "url_template")

#: Every family, in the order /metrics listed them before pre-aggregation.
FAMILY_ORDER = [
    "service_client_requests",
    "service_client_request_duration_seconds",
    "service_client_attempts",
    "service_client_retries",
    "service_client_circuit_state",
    "service_client_circuit_transitions",
    "service_client_bulkhead_in_flight",
    "service_client_bulkhead_queued",
    "service_client_bulkhead_limit",
    "service_client_bulkhead_rejections",
    "service_client_rejections",
    "service_client_hedges",
    "service_client_fallbacks",
    "service_client_instance_attempts",
    "service_client_instance_ejections",
    "service_client_instances",
    "service_client_instance_ewma_seconds",
    "service_client_token_fetches",
    "service_client_invalid_answers",
    "service_client_cache_lookups",
    "service_client_cache_bytes",
    "service_client_cache_stores",
    "service_client_token_expiry_seconds",
]


class Reference:
    """The pre-aggregated families as they were: plain prometheus_client children, same names and help."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "service_client_requests",
            "Logical calls to a dependency, by outcome",
            (PEER, "http_request_method", "url_template", "outcome", "http_response_status_code"),
            registry=registry,
        )
        self.duration = Histogram(
            "service_client_request_duration_seconds",
            "Duration of a logical call, retries and waits included",
            ENDPOINT,
            buckets=BUCKETS,
            registry=registry,
        )
        self.attempts = Counter("service_client_attempts", "Attempts sent", ENDPOINT, registry=registry)
        self.retries = Counter(
            "service_client_retries", "Retries, by what failed", [PEER, "reason"], registry=registry
        )
        self.bulkhead_rejections = Counter(
            "service_client_bulkhead_rejections",
            "Calls refused by a full bulkhead",
            [PEER],
            registry=registry,
        )
        self.rejections = Counter(
            "service_client_rejections",
            "Calls refused before or between attempts, by reason",
            [PEER, "reason"],
            registry=registry,
        )
        self.hedges = Counter(
            "service_client_hedges", "Hedged (backup) attempts started", [PEER], registry=registry
        )
        self.fallbacks = Counter(
            "service_client_fallbacks", "Calls answered by their fallback", [PEER], registry=registry
        )


class ReferenceClient:
    """What ClientMetrics did on prometheus_client children (before issue 16)."""

    def __init__(self, service: str, families: Reference) -> None:
        self.service = service
        self.f = families

    def call(self, method, endpoint, *, outcome, status, seconds, attempts) -> None:
        code = "" if status is None else str(status)
        self.f.requests.labels(self.service, method, endpoint, outcome, code).inc()
        if attempts:
            self.f.duration.labels(self.service, method, endpoint).observe(seconds)
            self.f.attempts.labels(self.service, method, endpoint).inc(attempts)

    def retry(self, reason) -> None:
        self.f.retries.labels(self.service, reason).inc()

    def rejection(self, reason) -> None:
        self.f.rejections.labels(self.service, reason).inc()
        if reason == "bulkhead_full":
            self.f.bulkhead_rejections.labels(self.service).inc()

    def hedge(self) -> None:
        self.f.hedges.labels(self.service).inc()

    def fallback(self) -> None:
        self.f.fallbacks.labels(self.service).inc()


SECONDS = [0.0, 1e-9, 0.001, 0.0010001, 0.0123, 0.25, 2.5, 5.0, 30.0, 31.0, 1e6, float("inf")]


def drive(clients: list, seed: int = 16, ops: int = 3000) -> None:
    """The same pseudo-random sequence of calls, retries, refusals, hedges and fallbacks into ``clients``."""
    rnd = random.Random(seed)
    for _ in range(ops):
        m = rnd.choice(clients)
        op = rnd.random()
        if op < 0.6:
            seconds = rnd.choice(SECONDS)
            if rnd.random() < 0.5:
                seconds *= rnd.random()
            m.call(
                rnd.choice(["GET", "POST"]),
                rnd.choice(["prices/{symbol}", "indicators/calculate"]),
                outcome=rnd.choice(["success", "timeout", "server_error", "short_circuited"]),
                status=rnd.choice([200, 503, None]),
                seconds=seconds,
                attempts=rnd.choice([0, 1, 1, 2, 3]),
            )
        elif op < 0.7:
            m.retry(rnd.choice(["server_error", "timeout"]))
        elif op < 0.85:
            m.rejection(rnd.choice(["bulkhead_full", "breaker_open", "rate_limited", "budget_exhausted"]))
        elif op < 0.93:
            m.hedge()
        else:
            m.fallback()


def blocks(text: str) -> dict[str, str]:
    """The exposition by family (``# HELP`` to the next), ``_created`` values masked."""
    masked = re.sub(r"^(\w+_created(?:\{.*\})?) \S+$", r"\1 <created>", text, flags=re.MULTILINE)
    out: dict[str, str] = {}
    for chunk in masked.split("# HELP ")[1:]:
        out[chunk.split(" ", 1)[0]] = chunk
    return out


def exposition(new: bool) -> str:
    registry = CollectorRegistry()
    if new:
        families = MetricFamilies(registry)
        clients = [
            ClientMetrics(s, families) for s in ("analysis-engine-service", "ml-workbench", "ml-workbench")
        ]
    else:
        reference = Reference(registry)
        clients = [
            ReferenceClient(s, reference) for s in ("analysis-engine-service", "ml-workbench", "ml-workbench")
        ]
    drive(clients)
    return generate_latest(registry).decode()


def test_exposition_is_unchanged() -> None:
    """The same calls give the same /metrics text as prometheus_client's Counter and Histogram, _created aside."""
    old, new = blocks(exposition(new=False)), blocks(exposition(new=True))
    assert old  # every pre-aggregated family, with its _total/_bucket/_count/_sum/_created blocks
    for name, block in old.items():
        assert new[name] == block, name
    assert "service_client_request_duration_seconds_bucket{" in old["service_client_request_duration_seconds"]


def test_families_keep_their_order() -> None:
    """/metrics lists the families in the order it did, the pre-aggregated ones where they were."""
    registry = CollectorRegistry()
    metrics = ClientMetrics("a", MetricFamilies(registry))
    metrics.call("GET", "e", outcome="success", status=200, seconds=0.1, attempts=1)
    text = generate_latest(registry).decode()
    types = [
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and "_created " not in line
    ]
    assert [t.removesuffix("_total") for t in types] == FAMILY_ORDER


def test_created_is_when_the_series_first_appeared() -> None:
    """``_created`` is the time of a series' first call; prometheus_client's switch turns it off."""
    registry = CollectorRegistry()
    metrics = ClientMetrics("a", MetricFamilies(registry))
    before = time.time()
    metrics.call("GET", "e", outcome="success", status=200, seconds=0.1, attempts=1)
    after = time.time()
    labels = {PEER: "a", "http_request_method": "GET", "url_template": "e"}
    for name, extra in (
        ("service_client_requests_created", {"outcome": "success", "http_response_status_code": "200"}),
        ("service_client_request_duration_seconds_created", {}),
        ("service_client_attempts_created", {}),
    ):
        created = registry.get_sample_value(name, {**labels, **extra})
        assert created is not None
        assert before <= created <= after, name
    disable_created_metrics()
    try:
        assert "_created" not in generate_latest(registry).decode()
    finally:
        enable_created_metrics()


def test_a_refused_call_makes_no_duration_series() -> None:
    """A call refused before any attempt counts in requests only, as before."""
    registry = CollectorRegistry()
    metrics = ClientMetrics("a", MetricFamilies(registry))
    metrics.call("GET", "e", outcome="short_circuited", status=None, seconds=0.0, attempts=0)
    text = generate_latest(registry).decode()
    assert 'service_client_requests_total{http_request_method="GET",http_response_status_code=""' in text
    assert "service_client_request_duration_seconds_count" not in text
    assert "service_client_attempts_total{" not in text


def test_two_threads_on_one_service_lose_no_increment() -> None:
    """Two threads hammering one ClientMetrics (and a second of the same service) give exact totals."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    shared = ClientMetrics("a", families)
    twin = ClientMetrics("a", families)  # another client of the same service: the same series
    n = 20_000
    start = threading.Barrier(2)

    def hammer(metrics: ClientMetrics) -> None:
        start.wait()
        for _ in range(n):
            metrics.call("GET", "e", outcome="success", status=200, seconds=0.25, attempts=2)
            metrics.retry("timeout")
            metrics.rejection("bulkhead_full")
            shared.hedge()
            metrics.fallback()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter will
    try:
        threads = [threading.Thread(target=hammer, args=(m,)) for m in (shared, twin)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    endpoint = {PEER: "a", "http_request_method": "GET", "url_template": "e"}
    value = registry.get_sample_value
    assert (
        value(
            "service_client_requests_total",
            {**endpoint, "outcome": "success", "http_response_status_code": "200"},
        )
        == 2 * n
    )
    assert value("service_client_request_duration_seconds_count", endpoint) == 2 * n
    assert value("service_client_request_duration_seconds_bucket", {**endpoint, "le": "0.1"}) == 0
    assert value("service_client_request_duration_seconds_bucket", {**endpoint, "le": "0.25"}) == 2 * n
    assert value("service_client_request_duration_seconds_sum", endpoint) == 0.25 * 2 * n
    assert value("service_client_attempts_total", endpoint) == 4 * n
    assert value("service_client_retries_total", {PEER: "a", "reason": "timeout"}) == 2 * n
    assert value("service_client_rejections_total", {PEER: "a", "reason": "bulkhead_full"}) == 2 * n
    assert value("service_client_bulkhead_rejections_total", {PEER: "a"}) == 2 * n
    assert value("service_client_hedges_total", {PEER: "a"}) == 2 * n
    assert value("service_client_fallbacks_total", {PEER: "a"}) == 2 * n


def test_a_scrape_while_calls_add_series() -> None:
    """Scraping while other threads add series and count never fails, and ends with every count."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    errors: list[BaseException] = []

    def calls(service: str) -> None:
        metrics = ClientMetrics(service, families)
        try:
            for i in range(3000):
                metrics.call("GET", f"e{i % 300}", outcome="success", status=200, seconds=0.01, attempts=1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def scrape() -> None:
        try:
            generate_latest(registry)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            raise

    race([lambda: calls("a"), lambda: calls("b")], scrape)
    assert errors == []
    total = sum(
        s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == "service_client_request_duration_seconds_count"
    )
    assert total == 6000


def test_clients_come_and_go_without_growth() -> None:
    """Thousands of clients of one service share one series per label set, which outlives them."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    for _ in range(2000):
        metrics = ClientMetrics("a", families)
        metrics.call("GET", "e", outcome="success", status=200, seconds=0.01, attempts=1)
        metrics.rejection("breaker_open")
        del metrics
    gc.collect()
    assert len(families.requests._series) == 1
    assert len(families.duration._series) == 1
    assert len(families.rejections._series) == 1
    assert len(families._locks) == 1
    labels = {PEER: "a", "http_request_method": "GET", "url_template": "e"}
    assert registry.get_sample_value("service_client_request_duration_seconds_count", labels) == 2000


def test_families_are_registered_once_per_registry() -> None:
    """default_families gives one set per registry; a second set on it is refused, as before."""
    # The default registry: default_families keys its sets by id(registry), so a test's
    # short-lived registry would leave an entry a later registry could reuse the id of.
    assert default_families() is default_families()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        MetricFamilies(REGISTRY)


def test_refused_counts_as_rejection_plus_a_call_without_attempts() -> None:
    """``refused()`` (the lean path's one lock) gives the /metrics text of the two calls it replaces."""

    def text(one_go: bool) -> dict[str, str]:
        registry = CollectorRegistry()
        metrics = ClientMetrics("a", MetricFamilies(registry))
        for reason, outcome in [("breaker_open", "short_circuited"), ("bulkhead_full", "bulkhead_full")] * 3:
            if one_go:
                metrics.refused("GET", "e", reason, outcome)
            else:
                metrics.rejection(reason)
                metrics.call("GET", "e", outcome=outcome, status=None, seconds=0.0, attempts=0)
        return blocks(generate_latest(registry).decode())

    two_calls, one_go = text(one_go=False), text(one_go=True)
    assert one_go == two_calls
    assert 'reason="bulkhead_full"} 3.0' in one_go["service_client_rejections_total"]
    assert "service_client_bulkhead_rejections_total" in one_go["service_client_bulkhead_rejections_total"]
