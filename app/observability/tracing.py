"""OpenTelemetry set-up: spans go to the user's global tracer provider, or to the project's own."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from yarl import URL

    from app.resilience.pipeline import CallRecord

__all__ = [
    "TRACER_NAME",
    "TracingState",
    "configure_tracing",
    "end_cancelled",
    "end_span",
    "start_attempt_span",
    "start_call_span",
    "tracing",
]

Exporter = Literal["none", "console", "otlp"]

#: The instrumentation scope of the client spans.
TRACER_NAME = "app.clients"

_NOOP_PROVIDER = trace.NoOpTracerProvider()
_NOOP_TRACER = trace.NoOpTracer()


def _public_global() -> object:
    """What ``trace.set_tracer_provider`` installed, or None, through the public API."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


# ``trace.get_tracer_provider()`` looks up an environment variable on every call while no
# provider is set (about 1 µs); the per-call check reads OpenTelemetry's module global
# instead (tens of ns), and falls back to the public call should that name ever go.
_GLOBAL_SLOT = hasattr(trace, "_TRACER_PROVIDER")


class TracingState:
    """Whether spans are recorded, and by which provider.

    The project's own provider (``configure_tracing``) when it set one up; otherwise the
    global provider, when the application installed one with
    ``trace.set_tracer_provider`` (before or after the clients were built), so the
    client spans join the application's traces and exporters; otherwise nothing, and
    the client skips all span work per call (``enabled`` is one attribute test and one
    module-global read). A global ``NoOpTracerProvider`` counts as none. The project's
    provider is held here, not only set globally, because OpenTelemetry allows one
    global provider per process and tests build several services in one.
    """

    __slots__ = ("_global_tracer", "_own", "_own_tracer", "_seen")

    def __init__(self) -> None:
        self._own: trace.TracerProvider | None = None
        self._own_tracer: trace.Tracer | None = None
        self._seen: object = None  # the global provider the tracer below came from
        self._global_tracer: trace.Tracer | None = None

    @property
    def enabled(self) -> bool:
        """True when client spans are recorded (by the project's provider or the global one)."""
        return self.is_enabled()

    def is_enabled(self) -> bool:
        """``enabled``, asked as a method: the per-call spelling.

        Python 3.11 runs a method call in the caller's interpreter loop, a property's
        getter through a C call and a loop of its own: ~250 instructions more, twice a call.
        """
        if self._own_tracer is not None:
            return True
        current = trace._TRACER_PROVIDER if _GLOBAL_SLOT else _public_global()
        if current is None:
            return False
        if current is not self._seen:
            self._adopt(current)
        return self._global_tracer is not None

    @property
    def provider(self) -> trace.TracerProvider:
        """The provider spans go to (a no-op one when tracing is off)."""
        if self._own is not None:
            return self._own
        if self.enabled and isinstance(self._seen, trace.TracerProvider):
            return self._seen
        return _NOOP_PROVIDER

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer client spans are made with (a no-op one when tracing is off)."""
        if self._own_tracer is not None:
            return self._own_tracer
        if self.enabled and self._global_tracer is not None:
            return self._global_tracer
        return _NOOP_TRACER

    @property
    def own(self) -> bool:
        """True when the project's own provider (``configure_tracing``) is in use."""
        return self._own is not None

    def use_own(self, provider: trace.TracerProvider | None) -> None:
        """Send spans to ``provider``; None goes back to the global provider, if any."""
        self._own = provider
        self._own_tracer = None if provider is None else provider.get_tracer(TRACER_NAME)

    def _adopt(self, current: object) -> None:
        self._seen = current
        self._global_tracer = None
        if isinstance(current, trace.TracerProvider) and not isinstance(
            current, trace.NoOpTracerProvider | trace.ProxyTracerProvider
        ):
            self._global_tracer = current.get_tracer(TRACER_NAME)


tracing = TracingState()

if OTEL_PYTHON_TRACER_PROVIDER in os.environ:
    # The provider named by the environment is loaded on the first public look-up only;
    # do it now, so the per-call check above sees it.
    trace.get_tracer_provider()


def configure_tracing(
    service_name: str,
    exporter: Exporter = "none",
    otlp_endpoint: str | None = None,
    processors: list[SpanProcessor] | None = None,
    *,
    set_global: bool = False,
) -> TracerProvider | None:
    """Set up the project's own tracer provider; returns it, or None when it sets none up.

    ``otlp`` sends to ``otlp_endpoint`` in batches; ``console`` prints each span;
    ``processors`` (tests pass an in-memory exporter's) are added as given. With
    ``exporter="none"`` and no processors the project has no provider of its own, and
    spans go to the global provider when the application installed one (else nowhere).
    ``set_global`` also installs the new provider as OpenTelemetry's global one, so the
    application's own spans share it; OpenTelemetry keeps the first global provider of
    a process, so it is not replaced when one is already set.
    """
    if exporter == "none" and not processors:
        tracing.use_own(None)
        return None
    # The SDK only for a provider of our own: the API above is all that spans to a user's
    # provider, or none, need (the SDK is ~1 MB more in every process).
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

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
    if set_global and _public_global() is None:
        trace.set_tracer_provider(provider)
    tracing.use_own(provider)
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


def start_attempt_span(record: CallRecord, headers: MutableMapping[str, str]) -> trace.Span:
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


def end_span(span: trace.Span, record: CallRecord, error: BaseException | None) -> None:
    """Close ``span`` with the status code and, on failure, the error type (and a typed error's outcome)."""
    if record.status is not None:
        span.set_attribute("http.response.status_code", record.status)
    span.set_attribute("app.attempts", record.attempts)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, getattr(error, "outcome", None)))
    span.end()


def end_cancelled(span: trace.Span) -> None:
    """Close the span of an attempt or call that was cancelled (a hedge's loser, a caller gone)."""
    span.set_attribute("error.type", "cancelled")
    span.end()
