"""Metrics, the status API and its SSE stream, traces across two real services, and log fields."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.clients import BaseServiceClient, ClientConfig
from app.clients.policies import ClientPolicies
from app.containers import Container
from app.main import create_app
from app.observability.logging import JsonFormatter, configure_logging, stop_logging
from app.observability.metrics import ClientMetrics, MetricFamilies
from app.observability.tracing import configure_tracing
from settings import load_settings
from tests.support.asgi import serve
from tests.support.transports import gateway_on
from tests.support.upstream import Upstream, json, sequence
from upstreams.analysis_engine.service import AnalysisEngineSettings
from upstreams.analysis_engine.service import create_app as create_analysis_engine

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

#: A well-formed Analysis Engine regime answer (the gateway checks the shape).
REGIME = {"symbol": "GBPUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}


@pytest.fixture
def container(monkeypatch, upstream: Upstream, transport: str) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    gateway_on(monkeypatch, transport)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    c = Container()
    c.settings.override(load_settings())
    return c


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def test_metrics_endpoint_shows_client_and_server_metrics(container, upstream: Upstream) -> None:
    """/metrics has the client families (endpoint = template) and the gateway's own HTTP metrics."""
    upstream.route("market-regime/GBPUSD", sequence(json({}, status=503), json(REGIME)))
    async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/regime/GBPUSD") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    requests = samples(text, "service_client_requests_total")
    mine = [
        (labels, value) for labels, value in requests
        if labels["peer_service"] == "analysis-engine-service" and labels["outcome"] == "success"
    ]  # fmt: skip
    assert mine
    assert any(labels["url_template"] == "market-regime/{symbol}" and v >= 1 for labels, v in mine)
    retries = samples(text, "service_client_retries_total")
    assert any(labels["reason"] == "server_error" and v >= 1 for labels, v in retries)
    assert any(
        labels["http_route"] == "/api/v1/regime/{symbol}"
        for labels, _ in samples(text, "http_server_requests_total")
    )
    assert samples(text, "service_client_circuit_state")
    assert any(
        labels["peer_service"] == "analysis-engine-service"
        for labels, _ in samples(text, "service_client_bulkhead_in_flight")
    )
    assert "GBPUSD" not in text  # filled-in paths never become labels


async def test_metric_children_are_cached(upstream: Upstream, monkeypatch, transport) -> None:
    """After the first call's series are made, no call (nor the settling of its tally) asks for them again."""
    upstream.route("r", json({}))
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    config = ClientConfig(
        base_url=upstream.base_url, service_name="cached", enable_request_logging=False, transport=transport
    )
    policies = ClientPolicies.from_config(config, families=families)
    observer = policies.observer
    async with BaseServiceClient(config, policies=policies) as client:
        await client.get("r")
        observer.settle()  # the call's tally into the metrics: its series are made here

        def no_series(*args, **kwargs):
            raise AssertionError("a series looked up on the hot path")

        for family in (families.requests, families.duration, families.attempts):
            monkeypatch.setattr(family, "series", no_series)
        for _ in range(50):
            await client.get("r")
    text = generate_latest(registry).decode()
    assert [v for _, v in samples(text, "service_client_requests_total")] == [51.0]
    assert isinstance(observer.metrics, ClientMetrics)
    text = generate_latest(
        families.requests._registry if hasattr(families.requests, "_registry") else CollectorRegistry()
    )
    assert observer.stats.snapshot()["counts"]["success"] == 51
    assert text is not None


async def test_metrics_switch_off(upstream: Upstream, make_client) -> None:
    """enable_metrics=False: the client records no Prometheus samples (its rolling stats still run)."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url, service_name="silent", enable_metrics=False)
    await client.get("r")
    assert client.observer.metrics is None
    assert client.observer.stats.snapshot()["requests"] == 1


async def test_status_api_and_stream(container, upstream: Upstream) -> None:
    """/api/v1/resilience counts outcomes and shows the breaker; the stream sends one event a second."""
    upstream.route("market-regime/EURUSD", json({}, status=500))
    async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
                assert resp.status == 503
        async with http.get(f"{base}/api/v1/resilience") as resp:
            status = await resp.json()
        ae = status["dependencies"]["analysis-engine-service"]
        assert ae["counts"]["server_error"] == 3
        assert ae["error_percent"] == 100.0
        assert ae["breaker"]["state"] == "closed"  # the test profile's threshold is 10
        assert ae["latency_ms"]["p99"] is not None
        assert len(ae["series"]) == 10
        assert ae["bulkhead"]["limit"] == 100
        events, started = [], time.monotonic()
        async with http.get(f"{base}/api/v1/resilience/stream") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(orjson.loads(line[6:]))
                    if len(events) == 3:
                        break
        elapsed = time.monotonic() - started
    assert 1.8 <= elapsed < 3.5
    assert all("analysis-engine-service" in e["dependencies"] for e in events)


async def test_one_trace_across_gateway_and_analysis_engine(monkeypatch, transport) -> None:
    """SERVER (gateway) > CLIENT call > CLIENT attempt > SERVER (Analysis Engine), one trace id."""
    exporter = InMemorySpanExporter()
    provider = configure_tracing("test", processors=[SimpleSpanProcessor(exporter)])
    try:
        upstream_app = create_analysis_engine(
            AnalysisEngineSettings(app_env="test"), tracer_provider=provider
        )
        async with serve(upstream_app) as ae_url:
            monkeypatch.setenv("APP_ENV", "test")
            monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", ae_url + "/api/v1")
            gateway_on(monkeypatch, transport)
            container = Container()
            container.settings.override(load_settings())
            async with (
                serve(create_app(container)) as base,
                aiohttp.ClientSession() as http,
                http.get(f"{base}/api/v1/regime/EURUSD") as resp,
            ):
                assert resp.status == 200
        await asyncio.sleep(0.05)
        spans = exporter.get_finished_spans()
    finally:
        configure_tracing("test", "none")
    by_id = {s.context.span_id: s for s in spans}

    def children(parent, kind):
        return [
            s
            for s in spans
            if s.kind == kind and s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    gateway_server = next(s for s in spans if s.kind == trace.SpanKind.SERVER and s.parent is None)
    (call,) = children(gateway_server, trace.SpanKind.CLIENT)
    (attempt,) = children(call, trace.SpanKind.CLIENT)
    (upstream_server,) = children(attempt, trace.SpanKind.SERVER)
    assert call.name == "GET market-regime/{symbol}"
    assert upstream_server.parent.span_id in by_id
    assert (
        len(
            {
                gateway_server.context.trace_id,
                call.context.trace_id,
                attempt.context.trace_id,
                upstream_server.context.trace_id,
            }
        )
        == 1
    )
    assert call.attributes["http.request.method"] == "GET"
    assert call.attributes["url.template"] == "market-regime/{symbol}"
    assert call.attributes["http.response.status_code"] == 200
    assert attempt.attributes["http.request.resend_count"] == 0


async def test_retry_events_and_log_trace_ids(upstream: Upstream, make_client, caplog) -> None:
    """A retried call's span carries a retry event, and its log record the span's ids."""
    exporter = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(exporter)])
    caplog.set_level(logging.INFO, logger="app.clients")
    try:
        upstream.route("r", sequence(json({}, status=503), json({})))
        client = make_client(upstream.base_url, max_retries=2)
        await client.get("r")
    finally:
        configure_tracing("test", "none")
    call = next(s for s in exporter.get_finished_spans() if s.parent is None)
    assert [e.name for e in call.events] == ["retry"]
    assert call.events[0].attributes["reason"] == "server_error"
    (record,) = [r for r in caplog.records if r.levelno == logging.INFO and r.name == "app.clients"]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(call.context.trace_id, "032x")
    assert line["span_id"] == format(call.context.span_id, "016x")
    attempts = [s for s in exporter.get_finished_spans() if s.parent is not None]
    assert len(attempts) == 2
    assert {r.headers["traceparent"].split("-")[1] for r in upstream.requests} == {line["trace_id"]}


def test_one_logging_setup_serves_uvicorn_too(capsys) -> None:
    """configure_logging routes uvicorn's loggers through the same JSON formatter."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json=True)
        logging.getLogger("uvicorn.error").info("server started")
        stop_logging()  # drains the writer thread: nothing logged is lost
        err = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    line = orjson.loads(err)
    assert line["logger"] == "uvicorn.error"
    assert line["message"] == "server started"


async def test_a_hedged_losers_span_is_ended_as_cancelled(upstream: Upstream, make_client) -> None:
    """With tracing on, the cancelled loser of a hedge still ends its attempt span."""
    calls = 0

    async def first_slow(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.0 if calls == 1 else 0.001)
        return web.json_response({})

    upstream.route("r", first_slow)
    exporter = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(exporter)])
    try:
        client = make_client(upstream.base_url, hedging_enabled=True, hedging_delay_seconds=0.05)
        await client.get("r")
    finally:
        configure_tracing("test", "none")
    attempts = [s for s in exporter.get_finished_spans() if s.parent is not None]
    assert len(attempts) == 2
    assert sorted(str(s.attributes.get("error.type")) for s in attempts) == ["None", "cancelled"]
