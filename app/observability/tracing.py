"""OpenTelemetry set-up: one tracer provider per process, exporting as the settings say."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

if TYPE_CHECKING:
    from yarl import URL

    from app.clients.exceptions import ClientError
    from app.resilience.pipeline import CallRecord

__all__ = [
    "TracingState",
    "configure_tracing",
    "end_cancelled",
    "end_span",
    "start_attempt_span",
    "start_call_span",
    "tracing",
]

Exporter = Literal["none", "console", "otlp"]


class TracingState:
    """Whether spans are recorded, and by which provider.

    When off, the client skips all span work per call. The provider is held here, not
    only set globally, because OpenTelemetry allows one global provider per process
    and tests build several services in one.
    """

    enabled = False
    provider: trace.TracerProvider = trace.NoOpTracerProvider()
    tracer: trace.Tracer = trace.NoOpTracer()


tracing = TracingState()


def configure_tracing(
    service_name: str,
    exporter: Exporter = "none",
    otlp_endpoint: str | None = None,
    processors: list[SpanProcessor] | None = None,
) -> TracerProvider | None:
    """Install the process's tracer provider; returns it, or None when tracing stays off.

    ``otlp`` sends to ``otlp_endpoint`` in batches; ``console`` prints each span;
    ``processors`` (tests pass an in-memory exporter's) are added as given.
    """
    if exporter == "none" and not processors:
        tracing.enabled = False
        tracing.provider = trace.NoOpTracerProvider()
        tracing.tracer = trace.NoOpTracer()
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415 - optional
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    for processor in processors or []:
        provider.add_span_processor(processor)
    tracing.provider = provider
    tracing.tracer = provider.get_tracer("app.clients")
    tracing.enabled = True
    return provider


def start_call_span(record: CallRecord, url: URL) -> trace.Span:
    """The CLIENT span of one logical call (HTTP semantic conventions, template as the route)."""
    return tracing.tracer.start_span(
        f"{record.method} {record.endpoint}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "http.request.method": record.method,
            "url.template": record.endpoint,
            "server.address": url.host or "",
            "server.port": url.port or 0,
            "peer.service": record.service,
        },
    )


def start_attempt_span(record: CallRecord, headers: dict[str, str]) -> trace.Span:
    """A child span for one attempt; its context goes upstream as ``traceparent``."""
    parent = trace.set_span_in_context(record.span)
    span = tracing.tracer.start_span(
        f"{record.method} {record.endpoint}",
        context=parent,
        kind=trace.SpanKind.CLIENT,
        attributes={
            "http.request.method": record.method,
            "url.template": record.endpoint,
            "http.request.resend_count": record.attempts - 1,
        },
    )
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span


def end_span(span: trace.Span, record: CallRecord, error: ClientError | None) -> None:
    """Close ``span`` with the status code and, on failure, the error type."""
    if record.status is not None:
        span.set_attribute("http.response.status_code", record.status)
    span.set_attribute("app.attempts", record.attempts)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, error.outcome))
    span.end()


def end_cancelled(span: trace.Span) -> None:
    """Close the span of an attempt or call that was cancelled (a hedge's loser, a caller gone)."""
    span.set_attribute("error.type", "cancelled")
    span.end()
