"""The call log's fast path: the same JSON lines without a LogRecord, flushed by the loop, and refusals sampled."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import threading
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yarl import URL

from app.clients.testing import FakeClock
from app.errors import BulkheadFullError, CircuitBreakerOpenError, ServerError
from app.observability import logging as log_setup
from app.observability.call_log import CallLines, call_line, fields_of, write_line
from app.observability.logging import BufferedLogHandler, JsonFormatter, configure_logging, stop_logging
from app.observability.observer import CallObserver
from app.observability.tracing import configure_tracing, tracing
from app.redaction import register_secret
from app.resilience.pipeline import CallRecord

clients_logger = logging.getLogger("app.clients")
#: Refusal lines come once per clock second per reason.
SECOND = 1.0


class ListHandler(logging.Handler):
    """An application's own handler: keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """configure_logging (JSON, batched) as the root logger's only handler, to a string; all put back after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, clients_logger.level
    root.handlers[:] = []  # pytest's own capture handlers would send every line down the slow path
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    clients_logger.setLevel(logging.DEBUG)  # for the attempt lines; asyncio's debug lines stay out
    try:
        yield stream
    finally:
        stop_logging()
        root.handlers[:], root.level = saved[0], saved[1]
        clients_logger.setLevel(saved[2])


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(spans)])
    try:
        yield spans
    finally:
        configure_tracing("test", "none")


def put(message: str, fields: dict[str, object]) -> bool:
    """write_line at INFO for app.clients, as the observer calls it."""
    line = {"ts": None, "level": "INFO", "logger": "app.clients", "message": message, **fields}
    written = write_line(clients_logger, logging.INFO, line)
    assert fields_of(line) == fields
    return written


def only_ours() -> None:
    """Take pytest's capture handlers off the root: it adds them for each test's call phase, after the fixtures."""
    assert log_setup.route is not None
    logging.getLogger().handlers[:] = [log_setup.route.handler]


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    if log_setup.route is not None:
        log_setup.route.handler.flush()
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def without_ts(line: str) -> str:
    parsed = orjson.loads(line)
    assert isinstance(parsed.pop("ts"), str)
    return orjson.dumps(parsed).decode()


def _record(endpoint: str = "items/{id}") -> CallRecord:
    record = CallRecord("up", "GET", endpoint, "rid-1")
    record.attempts, record.status, record.instance = 2, 200, "10.0.0.7:8001"
    return record


def _observer(**kw: object) -> CallObserver:
    return CallObserver("up", metrics=False, **kw)  # type: ignore[arg-type]


def _both_ways(stream: io.StringIO, log: object) -> tuple[str, str]:
    """The line ``log()`` writes on the fast path, then through a record (a user's handler present)."""
    assert callable(log)
    only_ours()

    def no_record(record: logging.LogRecord) -> None:
        raise AssertionError(f"a record on the fast path: {record.getMessage()}")

    clients_logger.handle = no_record  # type: ignore[method-assign]
    try:
        log()
    finally:
        del clients_logger.handle
    log_setup.route.handler.flush()  # type: ignore[union-attr]
    fast = stream.getvalue().splitlines()
    mine = ListHandler()
    logging.getLogger().addHandler(mine)
    try:
        log()
    finally:
        logging.getLogger().removeHandler(mine)
    log_setup.route.handler.flush()  # type: ignore[union-attr]
    every = stream.getvalue().splitlines()
    assert len(fast) == 1
    assert len(every) == 2
    assert len(mine.records) == 1  # the user's handler saw the second as a record
    assert every[1] == JsonFormatter().format(mine.records[0])  # the same line both got
    return fast[0], every[1]


# -- the same line either way -----------------------------------------------------------


def test_a_fast_line_equals_the_records_line(out: io.StringIO) -> None:
    """Key for key, value for value, in the same order, but for ts: a call, a failed call, an attempt."""
    only_ours()
    observer = _observer(log_response_body=True)
    record = _record()
    fast, slow = _both_ways(out, lambda: observer.call_ended(record, 0.01234, None, None, {"id": 7}))
    assert without_ts(fast) == without_ts(slow)
    assert list(orjson.loads(fast))[:4] == ["ts", "level", "logger", "message"]
    line = orjson.loads(fast)
    assert line["message"] == "call GET items/{id} success"
    assert line["server.address"] == "10.0.0.7:8001"
    assert line["response_body"] == '{"id":7}'
    out.truncate(0)
    out.seek(0)
    error = ServerError("HTTP 500", status=500)
    fast, slow = _both_ways(out, lambda: observer.call_ended(record, 0.5, error))
    assert without_ts(fast) == without_ts(slow)
    assert orjson.loads(fast)["error"] == "ServerError"
    out.truncate(0)
    out.seek(0)
    fast, slow = _both_ways(
        out, lambda: observer.attempt_ended(record, None, None, {"page": 2, "token": "x"})
    )
    assert without_ts(fast) == without_ts(slow)
    assert orjson.loads(fast)["level"] == "DEBUG"
    assert orjson.loads(fast)["params"] == {"page": 2, "token": "***"}


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("plain", {}),
        ('quoted "x" \\ \n and é', {"a": 1}),
        ("odd values", {"when": object.__new__(type("Odd", (), {"__str__": lambda _: "odd!"})), "n": 1.5}),
        ("int keys", {"by_id": {1: "a"}}),
        ("nested", {"x": {"y": [1, None, True]}, "level_of": "DEBUG"}),
    ],
)
def test_any_fields_give_the_formatters_line(
    out: io.StringIO, message: str, fields: dict[str, object]
) -> None:
    """Empty fields, escapes, objects orjson cannot write, non-string keys: the formatter's line all the same."""
    only_ours()
    assert put(message, fields) is True
    record = clients_logger.makeRecord(
        "app.clients", logging.INFO, "f", 1, message, None, None, extra={"fields": fields}
    )
    (fast,) = out.getvalue().splitlines() if log_setup.route.handler.flush() is None else []  # type: ignore[union-attr]
    assert without_ts(fast) == without_ts(JsonFormatter().format(record))


def test_a_fast_line_equals_the_records_line_when_traced(out: io.StringIO, traced) -> None:
    """With tracing on: the call span's ids in both, and a refusal's ambient span ids in both."""
    only_ours()
    observer = _observer()
    record = _record()
    observer.call_started(record, URL("http://up.test/items/7"))
    # The log line alone: call_ended would also end the span, which can end only once.
    fast, slow = _both_ways(
        out, lambda: observer._log(record, 0.01, outcome="success", error=None, sent=None, received=None)
    )
    assert without_ts(fast) == without_ts(slow)
    assert orjson.loads(fast)["trace_id"] == format(record.span.get_span_context().trace_id, "032x")
    out.truncate(0)
    out.seek(0)
    error = CircuitBreakerOpenError(service_name="up", method="GET", endpoint="x", attempts=0)
    clock = FakeClock()
    sampled = _observer(clock=clock)
    with tracing.tracer.start_as_current_span("inbound") as inbound:

        def refuse() -> None:
            clock.advance(SECOND)
            sampled.refused("GET", "x", "breaker_open", error)

        fast, slow = _both_ways(out, refuse)
    assert without_ts(fast) == without_ts(slow)
    assert orjson.loads(fast)["span_id"] == format(inbound.get_span_context().span_id, "016x")


def _kinds() -> list[CallRecord]:
    """Records whose lines escape something, or leave a field out, or hold one of several kinds of value."""
    plain = CallRecord("up", "GET", "items/{id}", "0123456789abcdef0123456789abcdef")
    odd = CallRecord('up "quoted" \\ é', "POST", 'say/"hi"\n\t\x01', 'rid "1" \\ é\x7f')
    odd.instance = "10.0.0.7:8001"
    unsent = CallRecord("up", "DELETE", "x", "")  # a refusal's record: no id
    many = CallRecord("up", "PUT", "ünïcode/✓", "ÄBC123")  # alphanumeric outside ASCII: written as it is
    many.attempts, many.status, many.instance = 3, None, "[::1]:8443"
    for record in (plain, odd):
        record.attempts, record.status = 1, 200
    return [plain, odd, unsent, many]


@pytest.mark.parametrize("record", _kinds(), ids=["plain", "escaped", "unsent", "unicode"])
@pytest.mark.parametrize("error", [None, ServerError("HTTP 500", status=500)], ids=["ok", "error"])
def test_a_call_line_from_cached_pieces_equals_the_records_line(
    out: io.StringIO, record: CallRecord, error: ServerError | None
) -> None:
    """The common line (no span, no bodies), once its kind's pieces are made and again from them."""
    observer = _observer()
    for seconds in (0.01234, 2.5):  # the second line of the kind from its cached pieces
        out.truncate(0)
        out.seek(0)
        fast, slow = _both_ways(out, lambda: observer.call_ended(record, seconds, error))  # noqa: B023
        assert without_ts(fast) == without_ts(slow)
        assert orjson.loads(fast)["duration_ms"] == int(seconds * 1_000_000 + 0.5) / 1000


def test_every_duration_and_id_is_written_as_orjson_writes_it() -> None:
    """Byte for byte the dict's line: durations across the range (and past it, and negative), ids of any kind."""
    lines = CallLines()
    record = CallRecord("up", "GET", "x", "")
    record.attempts, record.status = 1, 200
    rng = random.Random(16)
    micros = [*range(3000), *(rng.randrange(10**e) for e in range(1, 19) for _ in range(300))]
    seconds = [m / 1_000_000 for m in micros] + [-0.5, -1e-7, 1e9, 1e12, 123456789.0001]
    ids = ["", "abc", "ABCdef0123", 'a"b', "a\\b", "tab\there", "é", "ü✓", "\x00", "1-2_3.4"]
    for i, value in enumerate(seconds):
        record.request_id = ids[i % len(ids)]
        line = call_line(record, value, "success", None)
        line["ts"] = "2026-01-01T00:00:00.000Z"
        assert lines.render((record, value, "success", None), line["ts"]) == log_setup.render_line(line)


def test_the_cached_pieces_start_over_past_their_bound(monkeypatch) -> None:
    """A caller formatting ids into endpoints does not grow a client's cache of kinds without bound."""
    monkeypatch.setattr(CallLines, "MAX_KINDS", 3)
    lines = CallLines()
    for n in range(10):
        record = CallRecord("up", "GET", f"items/{n}", "rid")
        lines.render((record, 0.01, "success", None), "ts")
        assert len(lines._pieces) <= 3


def test_a_registered_secret_is_masked_on_the_fast_path(out: io.StringIO) -> None:
    """A secret in the endpoint, the message and a field comes out as ***, and the line stays valid JSON."""
    only_ours()
    secret = "sk-fastpath-MarkerQ7w8e9"
    register_secret(secret)
    record = CallRecord("up", "GET", f"keys/{secret}", f"rid-{secret}")
    _observer().call_ended(record, 0.01, None)
    assert put(f"key {secret}", {"note": secret}) is True
    text = (lines(out), out.getvalue())[1]
    assert "MarkerQ7w8e9" not in text
    first, second = (orjson.loads(line) for line in text.splitlines())
    assert first["endpoint"] == "keys/***"
    assert first["request_id"] == "rid-***"
    assert first["message"] == "call GET keys/*** success"
    assert (second["message"], second["note"]) == ("key ***", "***")


# -- when a line must be a record -------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "root_handler",
        "clients_handler",
        "app_handler",
        "clients_filter",
        "no_propagate",
        "handler_filter",
        "handler_level",
        "formatter",
        "record_factory",
    ],
)
def test_anything_else_on_the_way_gets_records(out: io.StringIO, change: str) -> None:
    """A handler or filter added anywhere on the way, at any time, or another format: the next line is a real record."""
    only_ours()
    assert put("m", {}) is True
    root, app = logging.getLogger(), logging.getLogger("app")
    handler = log_setup.route.handler  # type: ignore[union-attr]
    mine, refuse = ListHandler(), logging.Filter("nothing")
    factory = logging.getLogRecordFactory()
    undo = {
        "root_handler": (lambda: root.addHandler(mine), lambda: root.removeHandler(mine)),
        "clients_handler": (
            lambda: clients_logger.addHandler(mine),
            lambda: clients_logger.removeHandler(mine),
        ),
        "app_handler": (lambda: app.addHandler(mine), lambda: app.removeHandler(mine)),
        "clients_filter": (
            lambda: clients_logger.addFilter(refuse),
            lambda: clients_logger.removeFilter(refuse),
        ),
        "no_propagate": (
            lambda: setattr(clients_logger, "propagate", False),
            lambda: setattr(clients_logger, "propagate", True),
        ),
        "handler_filter": (lambda: handler.addFilter(refuse), lambda: handler.removeFilter(refuse)),
        "handler_level": (
            lambda: handler.setLevel(logging.WARNING),
            lambda: handler.setLevel(logging.NOTSET),
        ),
        "formatter": (
            lambda: handler.setFormatter(logging.Formatter()),
            lambda: handler.setFormatter(log_setup.route.formatter),  # type: ignore[union-attr]
        ),
        "record_factory": (
            lambda: logging.setLogRecordFactory(type("Custom", (logging.LogRecord,), {})),
            lambda: logging.setLogRecordFactory(factory),
        ),
    }
    do, done = undo[change]
    do()
    try:
        assert put("m", {}) is False
    finally:
        done()
    assert put("m", {}) is True


def test_a_users_handler_added_later_sees_the_call_records(out: io.StringIO) -> None:
    """logging.getLogger().addHandler after configure_logging: from the next call on it gets every record."""
    only_ours()
    observer = _observer()
    observer.call_ended(_record(), 0.01, None)
    mine = ListHandler()
    logging.getLogger().addHandler(mine)
    try:
        observer.call_ended(_record(), 0.02, None)
    finally:
        logging.getLogger().removeHandler(mine)
    assert [r.getMessage() for r in mine.records] == ["call GET items/{id} success"]
    assert len(lines(out)) == 2


def test_text_format_and_unbatched_handlers_take_the_slow_path() -> None:
    """Only the batched JSON handler has a fast path; stop_logging ends it."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = []
    try:
        configure_logging("INFO", json=False, stream=io.StringIO())
        assert log_setup.route is None
        configure_logging("INFO", stream=io.StringIO(), background=False)
        assert log_setup.route is None
        configure_logging("INFO", stream=io.StringIO())
        assert log_setup.route is not None
        stop_logging()
        assert log_setup.route is None
        assert put("m", {}) is False
    finally:
        stop_logging()
        root.handlers[:], root.level = saved


# -- who writes the lines ---------------------------------------------------------------


async def test_the_loop_flushes_without_the_thread(out: io.StringIO) -> None:
    """On a loop, the first line arms a call_later and the flusher thread is not woken; the batch comes out together."""
    only_ours()
    handler = log_setup.route.handler  # type: ignore[union-attr]
    assert isinstance(handler, BufferedLogHandler)
    for i in range(3):
        assert put(f"m{i}", {}) is True
    assert out.getvalue() == ""
    assert not handler._wake.is_set()
    loop = asyncio.get_running_loop()
    for _ in range(100):  # the flush is due 50 ms after the first line
        if out.getvalue():
            break
        await asyncio.sleep(0.01)
    assert [line["message"] for line in lines(out)] == ["m0", "m1", "m2"]
    assert loop.is_running()


def test_lines_from_a_plain_thread_are_written_by_the_flusher(out: io.StringIO) -> None:
    """Outside any loop the flusher thread writes them, and stop_logging writes whatever is left."""
    only_ours()
    done = threading.Event()

    def log() -> None:
        for i in range(1000):
            put(f"t{i}", {})
        done.set()

    thread = threading.Thread(target=log)
    thread.start()
    thread.join()
    assert done.wait(5)
    stop_logging()
    assert [orjson.loads(line)["message"] for line in out.getvalue().splitlines()] == [
        f"t{i}" for i in range(1000)
    ]


def test_a_flush_armed_on_a_closed_loop_is_not_lost(out: io.StringIO, monkeypatch) -> None:
    """A loop closed with its flush pending (a sync client's private loop): the flusher thread writes the lines."""
    only_ours()
    handler = log_setup.route.handler  # type: ignore[union-attr]
    monkeypatch.setattr(BufferedLogHandler, "_GRACE", 0.05)

    async def log() -> None:
        put("orphan", {})

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log())
    loop.close()  # the call_later it armed never runs
    assert out.getvalue() == ""
    handler._wake.set()  # the thread sleeps its former (1 s) period: cut it short
    for _ in range(200):
        if out.getvalue():
            break
        threading.Event().wait(0.01)
    assert [orjson.loads(line)["message"] for line in out.getvalue().splitlines()] == ["orphan"]


async def test_a_warning_record_writes_the_buffered_lines_first(out: io.StringIO) -> None:
    """Fast lines and records share one buffer: their order is kept, and a warning writes it at once."""
    only_ours()
    put("before", {})
    clients_logger.warning("circuit")
    assert [orjson.loads(line)["message"] for line in out.getvalue().splitlines()] == ["before", "circuit"]


# -- the span filter --------------------------------------------------------------------


def test_the_span_filter_does_nothing_while_tracing_is_off(out: io.StringIO, monkeypatch) -> None:
    """Off: no context look-up, no attribute on the record, no ids in the line."""
    only_ours()
    assert not tracing.enabled

    def never() -> None:
        raise AssertionError("looked up a span with tracing off")

    monkeypatch.setattr(log_setup.trace, "get_current_span", never)
    mine = ListHandler()
    clients_logger.addHandler(mine)
    try:
        clients_logger.info("plain")
    finally:
        clients_logger.removeHandler(mine)
    (record,) = mine.records
    assert not hasattr(record, "otel_span")
    (line,) = lines(out)
    assert "trace_id" not in line


def test_the_span_filter_stamps_the_span_while_tracing_is_on(out: io.StringIO, traced) -> None:
    """On: the record carries the current span's context, and the line its ids."""
    only_ours()
    assert tracing.enabled
    mine = ListHandler()
    clients_logger.addHandler(mine)
    try:
        with tracing.tracer.start_as_current_span("work") as span:
            clients_logger.info("traced")
    finally:
        clients_logger.removeHandler(mine)
    (record,) = mine.records
    assert record.otel_span == span.get_span_context()
    (line,) = lines(out)
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- refusals, sampled ------------------------------------------------------------------


def _refuse(observer: CallObserver, reason: str = "breaker_open", *, fallback: bool = False) -> None:
    cls = CircuitBreakerOpenError if reason == "breaker_open" else BulkheadFullError
    error = cls(service_name="up", method="GET", endpoint="x", attempts=0)
    observer.refused("GET", "x", reason, error, fallback=fallback)  # type: ignore[arg-type]


def test_refusals_are_logged_once_a_second_per_reason(out: io.StringIO, monkeypatch) -> None:
    """The first at once, the rest of the second only counted (no fields, no record), the count on the next line."""
    only_ours()
    clock = FakeClock()
    observer = CallObserver("up", metrics=True, clock=clock)
    built: list[int] = []
    real = observer._log
    monkeypatch.setattr(observer, "_log", lambda *a, **k: (built.append(1), real(*a, **k)))
    for _ in range(50):
        _refuse(observer)
    _refuse(observer, "bulkhead_full")  # another reason has its own second
    clock.advance(SECOND / 2)
    for _ in range(10):
        _refuse(observer)
    assert len(built) == 2
    clock.advance(SECOND / 2)
    _refuse(observer, fallback=True)  # the second is over: logged, with what was left out
    _refuse(observer)
    logged = lines(out)
    assert [(line["outcome"], line.get("suppressed")) for line in logged] == [
        ("short_circuited", None),
        ("rejected", None),
        ("fallback", 59),
    ]
    assert len(built) == 3
    assert observer.stats.snapshot()["rejections"] == 63  # every refusal counted all the same
    clock.advance(SECOND * 10)  # a burst's tail: carried by the next refusal, however late
    _refuse(observer)
    assert lines(out)[-1]["suppressed"] == 1


def test_a_reasons_line_is_per_clock_second_and_counts_every_endpoint(out: io.StringIO) -> None:
    """Lines start at whole seconds: late in one and early in the next are two; the count spans keys."""
    only_ours()
    clock = FakeClock(1000.9)
    observer = CallObserver("up", metrics=False, clock=clock)
    error = CircuitBreakerOpenError(service_name="up", method="GET", endpoint="x", attempts=0)
    for endpoint in ["x", "y", "x", "y", "y"]:  # y's first of the second writes nothing: x's did
        observer.refused("GET", endpoint, "breaker_open", error)
    clock.advance(0.1)  # 1001.0: a new second
    observer.refused("POST", "z", "breaker_open", error)
    for _ in range(3):
        observer.refused("POST", "z", "breaker_open", error)
    clock.advance(5)
    observer.refused("GET", "y", "breaker_open", error)
    logged = [(line["endpoint"], line.get("suppressed")) for line in lines(out)]
    assert logged == [("x", None), ("z", 4), ("y", 3)]


def test_refusals_while_the_call_log_was_off_are_not_counted_as_left_out(out: io.StringIO) -> None:
    """log_calls off (a reload) then on again: like INFO off, the quiet seconds add nothing to ``suppressed``."""
    only_ours()
    clock = FakeClock()
    observer = CallObserver("up", metrics=False, clock=clock)
    _refuse(observer)
    observer.log_calls = False
    for _ in range(5):
        clock.advance(SECOND)
        for _ in range(100):
            _refuse(observer)
    clock.advance(SECOND)
    observer.log_calls = True
    _refuse(observer)
    assert [line.get("suppressed") for line in lines(out)] == [None, None]
    assert observer.stats.snapshot()["rejections"] == 502


def test_with_info_off_a_refusal_asks_the_logger_once_a_second(out: io.StringIO, monkeypatch) -> None:
    """INFO off: the level is asked at most once a second per reason; once it is on again, lines resume, counting none of the quiet."""
    only_ours()
    clock = FakeClock()
    observer = CallObserver("up", metrics=False, clock=clock)
    logger = logging.getLogger("app.clients")
    asked: list[int] = []
    real = logger.isEnabledFor
    monkeypatch.setattr(logger, "isEnabledFor", lambda level: (asked.append(level), real(level))[1])
    monkeypatch.setattr(logger, "level", logging.WARNING)
    for _ in range(20):
        _refuse(observer)
    assert len(asked) == 1
    assert lines(out) == []
    clock.advance(SECOND)
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.manager._clear_cache()  # the level's cache, as setLevel() clears it
    _refuse(observer)
    assert [line.get("suppressed") for line in lines(out)] == [None]
    assert observer.stats.snapshot()["rejections"] == 21


def test_sampled_refusals_through_records_too(monkeypatch, caplog) -> None:
    """With a user's handler (here pytest's) the sampled refusal lines are records, with the same count."""
    caplog.set_level(logging.INFO, logger="app.clients")
    clock = FakeClock()
    observer = _observer(clock=clock)
    for _ in range(5):
        _refuse(observer)
    clock.advance(SECOND)
    _refuse(observer)
    records = [r for r in caplog.records if r.name == "app.clients"]
    assert [getattr(r, "fields", {}).get("suppressed") for r in records] == [None, 4]


def test_a_line_orjson_cannot_render_goes_to_a_record_and_never_raises(out: io.StringIO) -> None:
    """An int past 64 bits in a field: the fast path steps aside, the record path reports it, the caller goes on."""
    only_ours()
    assert put("ok", {"n": 1}) is True
    assert put("too big", {"n": 2**70}) is False  # not raised: the observer then logs a record
    observer = _observer()
    reported: list[str] = []
    saved = logging.raiseExceptions
    logging.raiseExceptions = False  # handleError stays quiet; the line is what the test reads
    try:
        log_setup.route.handler.handleError = lambda record: reported.append(record.getMessage())  # type: ignore[union-attr, method-assign]
        params = {"n": 2**70}
        observer.attempt_ended(_record(), None, None, params)  # DEBUG attempt line: must not raise
    finally:
        logging.raiseExceptions = saved
    assert [line["message"] for line in lines(out)] == ["ok"]
    assert reported == ["attempt GET items/{id}"]
