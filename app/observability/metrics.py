"""Prometheus metrics of the service clients, with label children cached per client.

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

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from app.errors import Outcome, Rejection

__all__ = [
    "BREAKER_STATE_VALUES",
    "CALL_LABELS",
    "ClientMetrics",
    "MetricFamilies",
    "PEER",
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


class MetricFamilies:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "service_client_requests",
            "Logical calls to a dependency, by outcome",
            CALL_LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            "service_client_request_duration_seconds",
            "Duration of a logical call, retries and waits included",
            _ENDPOINT_LABELS,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "service_client_attempts",
            "Attempts sent",
            _ENDPOINT_LABELS,
            registry=registry,
        )
        self.retries = Counter(
            "service_client_retries",
            "Retries, by what failed",
            [PEER, "reason"],
            registry=registry,
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
            "service_client_hedges",
            "Hedged (backup) attempts started",
            [PEER],
            registry=registry,
        )
        self.fallbacks = Counter(
            "service_client_fallbacks",
            "Calls answered by their fallback",
            [PEER],
            registry=registry,
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


_families: dict[int, MetricFamilies] = {}


def default_families(registry: CollectorRegistry = REGISTRY) -> MetricFamilies:
    """The families on ``registry``, created on first use (one set per registry)."""
    families = _families.get(id(registry))
    if families is None:
        families = _families[id(registry)] = MetricFamilies(registry)
    return families


class ClientMetrics:
    """One client's view of the families: label children are made once and reused.

    ``prometheus_client``'s ``labels()`` takes a lock and a dict lookup on every call;
    caching the children keeps the per-call cost to the increment itself.
    """

    __slots__ = ("_duration", "_rejections", "_requests", "_retries", "families", "service")

    def __init__(self, service: str, families: MetricFamilies) -> None:
        self.service = service
        self.families = families
        self._requests: dict[tuple[str, str, str, int | None], Counter] = {}
        self._duration: dict[tuple[str, str], tuple[Histogram, Counter]] = {}
        self._retries: dict[str, Counter] = {}
        self._rejections: dict[str, list[Counter]] = {}

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        outcome: Outcome,
        status: int | None,
        seconds: float,
        attempts: int,
    ) -> None:
        """Count one finished logical call."""
        key = (method, endpoint, outcome, status)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.families.requests.labels(
                self.service, method, endpoint, outcome, "" if status is None else str(status)
            )
        requests.inc()
        if not attempts:
            return  # refused before any attempt: no upstream latency to report
        pair = self._duration.get((method, endpoint))
        if pair is None:
            pair = self._duration[(method, endpoint)] = (
                self.families.duration.labels(self.service, method, endpoint),
                self.families.attempts.labels(self.service, method, endpoint),
            )
        pair[0].observe(seconds)
        pair[1].inc(attempts)

    def retry(self, reason: Outcome) -> None:
        """Count one retry, by the outcome of the attempt that failed."""
        counter = self._retries.get(reason)
        if counter is None:
            counter = self._retries[reason] = self.families.retries.labels(self.service, reason)
        counter.inc()

    def rejection(self, reason: Rejection) -> None:
        """Count a call refused by a policy (breaker_open, bulkhead_full, rate_limited, budget_exhausted)."""
        counters = self._rejections.get(reason)
        if counters is None:
            counters = [self.families.rejections.labels(self.service, reason)]
            if reason == "bulkhead_full":
                counters.append(self.families.bulkhead_rejections.labels(self.service))
            self._rejections[reason] = counters
        for counter in counters:
            counter.inc()

    def circuit(self, state: str) -> None:
        """Set the breaker-state gauge (also at start, so a healthy dependency shows as 0)."""
        self.families.circuit_state.labels(self.service).set(BREAKER_STATE_VALUES[state])

    def transition(self, old: str, new: str) -> None:
        """Record a breaker state change."""
        self.circuit(new)
        self.families.circuit_transitions.labels(self.service, old, new).inc()

    def hedge(self) -> None:
        """Count a hedged attempt."""
        self.families.hedges.labels(self.service).inc()

    def fallback(self) -> None:
        """Count a call answered by its fallback."""
        self.families.fallbacks.labels(self.service).inc()

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
