"""The observer keeps a call's spans: nothing when tracing is off, a call span and attempt children when on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from yarl import URL

from app.errors import ServerError
from app.observability.observer import CallObserver
from app.observability.tracing import configure_tracing
from app.resilience.pipeline import CallRecord

URL_ = URL("http://up.test:8001/api/v1/r")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(spans)])
    try:
        yield spans
    finally:
        configure_tracing("test", "none")


def _observer() -> CallObserver:
    return CallObserver("up", metrics=False, log_calls=False)


def test_tracing_off_costs_no_span() -> None:
    """Off: the call is not traced, attempts get no span and headers stay as they are."""
    record = CallRecord("up", "GET", "r", "rid")
    observer = _observer()
    assert observer.call_started(record, URL_) is False
    assert record.span is None
    headers = {"X-Request-ID": "rid"}
    assert observer.attempt_started(record, headers) is None
    observer.attempt_ended(record, None, None, None)
    observer.call_ended(record, 0.01, None)
    assert headers == {"X-Request-ID": "rid"}


def test_a_traced_call_and_its_attempts(exporter: InMemorySpanExporter) -> None:
    """On: a CLIENT span per call and one child per attempt, whose context goes upstream as traceparent."""
    record = CallRecord("up", "GET", "r/{id}", "rid")
    observer = _observer()
    assert observer.call_started(record, URL_) is True
    first: dict[str, str] = {}
    record.attempts = 1
    span = observer.attempt_started(record, first)
    record.status = 503
    observer.attempt_ended(record, span, ServerError("HTTP 503", status=503), None)
    second: dict[str, str] = {}
    record.attempts = 2
    span = observer.attempt_started(record, second)
    record.status = 200
    observer.attempt_ended(record, span, None, None)
    observer.call_ended(record, 0.02, None)
    assert {"traceparent"} <= first.keys() & second.keys()
    assert first["traceparent"] != second["traceparent"]
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.parent is None)
    attempts = [s for s in spans if s.parent is not None]
    assert call.name == "GET r/{id}"
    assert call.attributes["server.port"] == 8001
    assert call.attributes["app.attempts"] == 2
    assert [a.attributes["http.request.resend_count"] for a in attempts] == [0, 1]
    assert attempts[0].attributes["error.type"] == "ServerError"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].attributes["http.response.status_code"] == 200
    assert all(a.parent.span_id == call.context.span_id for a in attempts)


def test_cancelled_attempts_and_calls_are_marked(exporter: InMemorySpanExporter) -> None:
    """A cancelled attempt (a hedge's loser) and a call its caller gave up on end with error.type cancelled."""
    record = CallRecord("up", "GET", "r", "rid")
    observer = _observer()
    observer.call_started(record, URL_)
    record.attempts = 1
    span = observer.attempt_started(record, {})
    observer.attempt_ended(record, span, asyncio.CancelledError(), None)
    observer.call_cancelled(record)
    assert [s.attributes["error.type"] for s in exporter.get_finished_spans()] == ["cancelled", "cancelled"]


def test_a_failed_call_span_carries_the_error(exporter: InMemorySpanExporter) -> None:
    """call_ended with an error closes the call span with that error's type and outcome."""
    record = CallRecord("up", "GET", "r", "rid")
    observer = _observer()
    observer.call_started(record, URL_)
    record.status = 503
    observer.call_ended(record, 0.01, ServerError("HTTP 503", status=503))
    [call] = exporter.get_finished_spans()
    assert call.attributes["error.type"] == "ServerError"
    assert call.status.description == "server_error"
