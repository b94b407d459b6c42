"""Metric families keep their names; their labels follow OpenTelemetry's HTTP semantic conventions."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.observability.http_metrics import _metrics as http_server_families
from app.observability.metrics import ClientMetrics, MetricFamilies

OLD_NAMES = {"service", "method", "endpoint", "status", "route"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> ClientMetrics:
    """One client's metrics, with one sample in every family."""
    m = ClientMetrics("analysis-engine-service", MetricFamilies(registry))
    m.call("GET", "prices/{symbol}", outcome="success", status=200, seconds=0.01, attempts=2)
    m.call("POST", "indicators/calculate", outcome="timeout", status=None, seconds=1.0, attempts=1)
    m.retry("server_error")
    m.rejection("bulkhead_full")
    m.rejection("budget_exhausted")
    m.transition("closed", "open")
    m.hedge()
    m.fallback()
    m.watch(lambda: 3.0, lambda: 1.0, lambda: 10.0)
    return m


def labels_of(registry: CollectorRegistry) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


EXPECTED = {
    "service_client_requests_total": {
        "peer_service",
        "http_request_method",
        "url_template",
        "outcome",
        "http_response_status_code",
    },
    "service_client_request_duration_seconds_bucket": {
        "peer_service",
        "http_request_method",
        "url_template",
        "le",
    },
    "service_client_attempts_total": {"peer_service", "http_request_method", "url_template"},
    "service_client_retries_total": {"peer_service", "reason"},
    "service_client_circuit_state": {"peer_service"},
    "service_client_circuit_transitions_total": {"peer_service", "from", "to"},
    "service_client_bulkhead_in_flight": {"peer_service"},
    "service_client_bulkhead_queued": {"peer_service"},
    "service_client_bulkhead_limit": {"peer_service"},
    "service_client_bulkhead_rejections_total": {"peer_service"},
    "service_client_rejections_total": {"peer_service", "reason"},
    "service_client_hedges_total": {"peer_service"},
    "service_client_fallbacks_total": {"peer_service"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_client_families_keep_their_names_and_use_semconv_labels(metrics, registry, name) -> None:
    """Each client family is exported under its old name, with the semantic-convention label names."""
    assert labels_of(registry)[name] == EXPECTED[name]


def test_no_family_keeps_an_old_label_name(metrics, registry) -> None:
    """service, method, endpoint, status and route are gone from every family."""
    for name, labels in labels_of(registry).items():
        assert not labels & OLD_NAMES, name


def test_call_labels_carry_the_values(metrics, registry) -> None:
    """The template, the method and the status code land in their labels; no status is an empty label."""
    ok = {
        "peer_service": "analysis-engine-service",
        "http_request_method": "GET",
        "url_template": "prices/{symbol}",
        "outcome": "success",
        "http_response_status_code": "200",
    }
    assert registry.get_sample_value("service_client_requests_total", ok) == 1.0
    timeout = {
        **ok,
        "http_request_method": "POST",
        "url_template": "indicators/calculate",
        "outcome": "timeout",
    }
    timeout["http_response_status_code"] = ""
    assert registry.get_sample_value("service_client_requests_total", timeout) == 1.0
    assert (
        registry.get_sample_value(
            "service_client_attempts_total",
            {
                "peer_service": "analysis-engine-service",
                "http_request_method": "GET",
                "url_template": "prices/{symbol}",
            },
        )
        == 2.0
    )


def test_gateway_server_families_use_semconv_labels(registry) -> None:
    """http_server_* are labelled http_request_method, http_route and http_response_status_code."""
    requests, duration = http_server_families(registry)
    requests.labels("GET", "/api/v1/regime/{symbol}", "200").inc()
    duration.labels("GET", "/api/v1/regime/{symbol}").observe(0.1)
    labels = labels_of(registry)
    assert labels["http_server_requests_total"] == {
        "http_request_method",
        "http_route",
        "http_response_status_code",
    }
    assert labels["http_server_request_duration_seconds_bucket"] == {
        "http_request_method",
        "http_route",
        "le",
    }
