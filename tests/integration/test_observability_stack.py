"""The framework fits an existing observability stack: the global tracer provider, the app's own log handlers."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from app.containers import Container
from app.main import create_app
from app.observability.logging import BufferedLogHandler, configure_logging, stop_logging
from app.observability.tracing import configure_tracing, tracing
from app.redaction import register_secret
from settings import load_settings
from tests.support.asgi import serve
from tests.support.upstream import Upstream, json

ROOT = Path(__file__).resolve().parents[2]
REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}

# -- tracing -------------------------------------------------------------------------


@pytest.fixture
def install_global() -> Iterator[Callable[[trace.TracerProvider], None]]:
    """Lets a test install OpenTelemetry's global provider, once, as an application would.

    OpenTelemetry allows one global provider per process; its own test suite resets the
    set-once guard between tests, as done here, and the previous state is put back.
    """
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    installed: list[trace.TracerProvider] = []

    def install(provider: trace.TracerProvider) -> None:
        trace.set_tracer_provider(provider)
        installed.append(provider)

    try:
        yield install
    finally:
        configure_tracing("test", "none")
        for provider in installed:
            if isinstance(provider, TracerProvider):
                provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def sdk_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "users-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_client_spans_go_to_the_global_provider(
    install_global, make_client, upstream: Upstream
) -> None:
    """With a global provider installed and no configure_tracing, the call and attempt spans are exported by it."""
    provider, exporter = sdk_provider()
    install_global(provider)
    upstream.route("r", json({}))
    client = make_client(upstream.base_url)
    await client.get("r")
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.parent is None)
    (attempt,) = [s for s in spans if s.parent is not None]
    assert call.name == "GET r"
    assert call.kind == trace.SpanKind.CLIENT
    assert call.instrumentation_scope.name == "app.clients"
    assert call.resource.attributes["service.name"] == "users-app"
    assert attempt.parent.span_id == call.context.span_id
    traceparent = upstream.requests[0].headers["traceparent"]
    assert traceparent.split("-")[1:3] == [
        format(call.context.trace_id, "032x"),
        format(attempt.context.span_id, "016x"),
    ]


async def test_a_provider_installed_after_the_client_was_built(
    install_global, make_client, upstream: Upstream
) -> None:
    """No provider: no span work and no traceparent; once the app installs one, the same client's next call is traced."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url)
    assert not tracing.enabled
    await client.get("r")
    assert "traceparent" not in upstream.requests[0].headers
    provider, exporter = sdk_provider()
    install_global(provider)
    assert tracing.enabled
    await client.get("r")
    assert "traceparent" in upstream.requests[1].headers
    assert len(exporter.get_finished_spans()) == 2


async def test_the_projects_own_provider_is_used_only_while_it_is_set_up(
    install_global, make_client, upstream: Upstream
) -> None:
    """configure_tracing's provider takes the spans while set up; configure_tracing("none") gives them back to the global one."""
    global_provider, global_spans = sdk_provider()
    install_global(global_provider)
    own_spans = InMemorySpanExporter()
    own = configure_tracing("gateway", processors=[SimpleSpanProcessor(own_spans)])
    assert tracing.provider is own
    upstream.route("r", json({}))
    client = make_client(upstream.base_url)
    await client.get("r")
    assert len(own_spans.get_finished_spans()) == 2
    assert global_spans.get_finished_spans() == ()
    assert configure_tracing("gateway", "none") is None
    assert tracing.provider is global_provider
    await client.get("r")
    assert len(global_spans.get_finished_spans()) == 2
    assert len(own_spans.get_finished_spans()) == 2


def test_set_global_installs_the_projects_provider_only_when_none_is_set(install_global, caplog) -> None:
    """configure_tracing(set_global=True) becomes OpenTelemetry's global provider, but never replaces the app's."""
    own = configure_tracing(
        "gateway", processors=[SimpleSpanProcessor(InMemorySpanExporter())], set_global=True
    )
    assert trace.get_tracer_provider() is own
    second = configure_tracing(
        "gateway", processors=[SimpleSpanProcessor(InMemorySpanExporter())], set_global=True
    )
    assert trace.get_tracer_provider() is own  # the first global provider stays, as OpenTelemetry wants
    assert tracing.provider is second
    assert not [r for r in caplog.records if "Overriding" in r.getMessage()]  # never asked to replace it
    assert own is not None
    own.shutdown()
    assert second is not None
    second.shutdown()


async def test_a_global_no_op_provider_means_tracing_off(
    install_global, make_client, upstream: Upstream
) -> None:
    """An application that installs OpenTelemetry's NoOpTracerProvider gets no span work and no traceparent."""
    install_global(trace.NoOpTracerProvider())
    upstream.route("r", json({}))
    client = make_client(upstream.base_url)
    assert not tracing.enabled
    await client.get("r")
    assert "traceparent" not in upstream.requests[0].headers


async def test_the_applications_own_span_parents_the_call(
    install_global, make_client, upstream: Upstream
) -> None:
    """A call made inside the application's span is its child, in the application's trace."""
    provider, exporter = sdk_provider()
    install_global(provider)
    upstream.route("r", json({}))
    client = make_client(upstream.base_url)
    with trace.get_tracer("users.code").start_as_current_span("handle order") as mine:
        await client.get("r")
    mine_context = mine.get_span_context()
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "GET r" and s.parent.span_id == mine_context.span_id]
    (attempt,) = [s for s in spans if s.name == "GET r" and s.parent.span_id == call.context.span_id]
    assert {call.context.trace_id, attempt.context.trace_id} == {mine_context.trace_id}


async def test_the_gateway_traces_into_the_global_provider(
    install_global, monkeypatch, upstream: Upstream
) -> None:
    """With only a global provider, the gateway's SERVER span and its client spans are one trace in it."""
    provider, exporter = sdk_provider()
    install_global(provider)
    upstream.route("market-regime/EURUSD", json(REGIME))
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    container = Container()
    container.settings.override(load_settings())
    async with (
        serve(create_app(container)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/regime/EURUSD") as resp,
    ):
        assert resp.status == 200
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind == trace.SpanKind.SERVER and s.parent is None)
    call = next(
        s
        for s in spans
        if s.name == "GET market-regime/{symbol}" and s.parent.span_id == server.context.span_id
    )
    assert {s.context.trace_id for s in spans if s.kind == trace.SpanKind.CLIENT} == {server.context.trace_id}
    assert call.attributes["peer.service"] == "analysis-engine-service"


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (its own OpenTelemetry globals, its own exit)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_global_provider_set_by_the_application_in_a_fresh_process() -> None:
    """In a fresh interpreter, set_tracer_provider once, then a real call: its spans reach that provider."""
    done = run_python(
        """
        import asyncio
        from aiohttp import web
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from app.clients import BaseServiceClient, ClientConfig

        async def main():
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            seen = []
            async def handler(request):
                seen.append(request.headers.get("traceparent"))
                return web.json_response({})
            app = web.Application()
            app.router.add_get("/api/r", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            config = ClientConfig(base_url=f"http://127.0.0.1:{port}/api", service_name="fresh")
            async with BaseServiceClient(config) as client:
                await client.get("r")
            await runner.cleanup()
            names = sorted(s.name for s in exporter.get_finished_spans())
            print(names, seen[0] is not None)

        asyncio.run(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['GET r', 'GET r'] True"


def test_a_provider_named_by_the_environment_is_used() -> None:
    """OTEL_PYTHON_TRACER_PROVIDER (OpenTelemetry's own variable) names the global provider: client spans go to it."""
    code = """
        from app.observability.tracing import tracing
        from opentelemetry.sdk.trace import TracerProvider
        print(tracing.enabled, isinstance(tracing.provider, TracerProvider))
        """
    assert run_python(code, {"OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}).stdout.split() == [
        "True",
        "True",
    ]
    env = {k: v for k, v in os.environ.items() if k != "OTEL_PYTHON_TRACER_PROVIDER"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.split() == ["False", "False"]


# -- logging -------------------------------------------------------------------------


class ListHandler(logging.Handler):
    """An application's own handler: keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_state() -> Iterator[logging.Logger]:
    """The root logger's handlers and level, and uvicorn's, restored after the test."""
    root = logging.getLogger()
    uvicorn = logging.getLogger("uvicorn")
    saved = root.handlers[:], root.level, uvicorn.handlers[:], uvicorn.propagate
    try:
        yield root
    finally:
        stop_logging()
        root.handlers[:], root.level = saved[0], saved[1]
        uvicorn.handlers[:], uvicorn.propagate = saved[2], saved[3]


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_extra_fields_are_kept_in_the_json_line(root_state) -> None:
    """Attributes passed with extra= appear in the line; LogRecord's own attributes do not."""
    out = io.StringIO()
    configure_logging("INFO", stream=out, background=False)
    logging.getLogger("orders").info("placed %s", "o-1", extra={"order_id": 42, "customer": {"tier": "gold"}})
    (line,) = json_lines(out)
    assert line["message"] == "placed o-1"
    assert line["order_id"] == 42
    assert line["customer"] == {"tier": "gold"}
    for standard in (
        "args",
        "msg",
        "pathname",
        "lineno",
        "levelno",
        "created",
        "thread",
        "otel_span",
        "fields",
    ):
        assert standard not in line


def test_extra_fields_are_scrubbed_by_name_and_by_value(root_state) -> None:
    """An extra named like a credential, a nested password and a registered key under any name are masked."""
    secret = "sk-extra-field-MarkerE1x2t3"
    register_secret(secret)
    out = io.StringIO()
    configure_logging("INFO", stream=out, background=False)
    logging.getLogger("orders").warning(
        "calling with %s",
        secret,
        extra={
            "api_key": "abc-not-registered",
            "login": {"user": "ann", "password": "hunter2"},
            "note": f"k={secret}",
        },
    )
    (line,) = json_lines(out)
    assert line["api_key"] == "***"
    assert line["login"] == {"user": "ann", "password": "***"}
    assert line["note"] == "k=***"
    assert line["message"] == "calling with ***"
    assert "MarkerE1x2t3" not in out.getvalue()


def test_odd_extra_values_never_break_the_line(root_state) -> None:
    """Objects orjson cannot write, dicts with int keys, and extras named like the line's own keys: one valid line."""

    class Order:
        def __str__(self) -> str:
            return "Order#7"

    out = io.StringIO()
    configure_logging("INFO", stream=out, background=False)
    logging.getLogger("orders").info(
        "x", extra={"order": Order(), "by_id": {1: "a"}, "level": "mine", "ts": 0}
    )
    (line,) = json_lines(out)
    assert line["order"] == "Order#7"
    assert line["by_id"] == {"1": "a"}
    assert line["level"] == "INFO"  # the line's own keys are never shadowed
    assert isinstance(line["ts"], str)


def test_uvicorns_colour_copy_of_the_message_is_left_out(root_state) -> None:
    """Uvicorn's color_message extra (ANSI codes) is not written; its message is."""
    out = io.StringIO()
    configure_logging("INFO", stream=out, background=False)
    logging.getLogger("uvicorn.error").info(
        "Started %s", "server", extra={"color_message": "\x1b[1mStarted\x1b[0m %s"}
    )
    (line,) = json_lines(out)
    assert line["message"] == "Started server"
    assert "color_message" not in line


def test_handlers_it_did_not_install_are_left_alone(root_state) -> None:
    """The app's root handler and uvicorn's own stay through configure, reconfigure and stop; only ours come and go."""
    mine, uvicorns = ListHandler(), ListHandler()
    root_state.addHandler(mine)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(uvicorns)
    uvicorn.propagate = False  # as uvicorn's own logging config sets it
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first, background=False)
    configure_logging("INFO", stream=second, background=False)  # replaces only its own handler
    ours = [h for h in root_state.handlers if h is not mine and not type(h).__module__.startswith("_pytest")]
    assert len(ours) == 1
    assert mine in root_state.handlers
    assert uvicorn.handlers == [uvicorns]
    assert uvicorn.propagate is False
    logging.getLogger("app.x").info("to both")
    logging.getLogger("uvicorn").info("to uvicorn's only")
    assert [r.getMessage() for r in mine.records] == ["to both"]
    assert [r.getMessage() for r in uvicorns.records] == ["to uvicorn's only"]
    assert first.getvalue() == ""
    assert [line["message"] for line in json_lines(second)] == ["to both"]
    stop_logging()
    assert mine in root_state.handlers
    assert not [h for h in root_state.handlers if h in ours]


def test_the_plain_text_format_is_scrubbed_too(root_state) -> None:
    """json=False writes stock text lines, with registered secrets masked."""
    secret = "sk-plain-format-MarkerP1a2i3"
    register_secret(secret)
    out = io.StringIO()
    configure_logging("INFO", json=False, stream=out, background=False)
    logging.getLogger("app.x").info("key %s", secret)
    assert out.getvalue().rstrip().endswith("INFO app.x key ***")


def test_the_buffered_handler_closes_twice(root_state) -> None:
    """close() twice, and close() after stop_logging closed it (atexit, then logging.shutdown): no error, nothing lost."""
    out = io.StringIO()
    handler = configure_logging("INFO", stream=out)
    assert isinstance(handler, BufferedLogHandler)
    logging.getLogger("app.x").info("one")
    stop_logging()
    handler.close()
    handler.close()
    assert [line["message"] for line in json_lines(out)] == ["one"]


def test_close_while_the_handlers_lock_is_held_returns_promptly() -> None:
    """logging.shutdown() holds the handler's lock while it closes it: the flusher, waiting for that lock, still stops at once."""
    out = io.StringIO()
    handler = BufferedLogHandler(out, interval=0.01)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.acquire()
    try:
        for i in range(50):
            handler.handle(logging.makeLogRecord({"msg": f"line {i}", "levelno": logging.INFO}))
        time.sleep(0.1)  # the flusher has lines to write and waits for the lock we hold
        assert out.getvalue() == ""
        started = time.monotonic()
        handler.close()
        elapsed = time.monotonic() - started
    finally:
        handler.release()
    assert elapsed < 1.0
    assert not handler._flusher.is_alive()
    assert out.getvalue().splitlines() == [f"line {i}" for i in range(50)]


@pytest.mark.parametrize("lines", [1, 2000])
def test_interpreter_exit_flushes_every_line_without_a_traceback(lines) -> None:
    """A process that logs and exits: atexit's stop_logging, then logging.shutdown's second close; every line written."""
    done = run_python(
        f"""
        import logging, sys
        from app.observability.logging import configure_logging
        configure_logging("INFO")
        for i in range({lines}):
            logging.getLogger("app.exit").info("line %d", i)
        """
    )
    assert done.returncode == 0
    assert "Traceback" not in done.stderr
    messages = [orjson.loads(line)["message"] for line in done.stderr.splitlines()]
    assert messages == [f"line {i}" for i in range(lines)]


def test_logging_switches_apply_only_while_no_other_handler_exists() -> None:
    """The logging module's per-record look-ups are switched off only when ours is the only handler, and put back by stop_logging."""
    done = run_python(
        """
        import logging
        from app.observability.logging import configure_logging, stop_logging
        before = (logging._srcfile, logging.logThreads)
        configure_logging("INFO")
        alone = (logging._srcfile is None, logging.logThreads)
        stop_logging()
        restored = (logging._srcfile, logging.logThreads) == before
        logging.getLogger().addHandler(logging.StreamHandler())
        configure_logging("INFO")
        shared = (logging._srcfile is None, logging.logThreads)
        print(alone, restored, shared)
        """
    )
    assert done.stdout.strip() == "(True, False) True (False, True)"
