"""Structured JSON logging for the service and uvicorn alike, scrubbed of secrets, off the hot path."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

import orjson
from opentelemetry import trace

from app.observability.tracing import tracing
from app.redaction import REDACTED, contains_secret, is_secret_key, redact, scrub, scrub_deep

__all__ = [
    "BufferedLogHandler",
    "CallLogRoute",
    "JsonFormatter",
    "configure_logging",
    "render_line",
    "route",
    "stop_logging",
]

# Attributes every LogRecord has (and the ones formatters add to it): anything else on a
# record came from ``extra=`` and belongs in the line.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",  # set by logging.Formatter.format on the record
    "asctime",
    "taskName",  # Python 3.12
    "otel_span",  # stamped by _SpanFilter, rendered as trace_id/span_id
    "fields",  # this project's structured fields, merged at the top level
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


#: ".000Z" to ".999Z", the end of every time stamp.
MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ``fields`` and ``extra=`` attributes.

    Every registered secret is masked, wherever it ended up; the values of ``extra=``
    attributes whose names look like credentials (``api_key``, ``password``) too.
    """

    #: The second (``int(time.time())``) ``prefix`` is for; both read by the call log's fast path.
    second = -1
    #: That second as ``2026-01-31T12:00:00``, computed once a second.
    prefix = ""

    def timestamp(self, created: float) -> str:
        """``created`` (``time.time()``) as the line's ``ts``: UTC, milliseconds, ``Z``."""
        # Building a datetime per record costs more than the rest of the line: the
        # date-and-seconds part is computed once a second.
        second = int(created)
        if second != self.second:
            self.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.second = second
        # The milliseconds from a table: a formatted int cost a call log line 5k instructions.
        return self.prefix + MILLIS[int((created - second) * 1000)]

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line, with known secrets scrubbed out."""
        out: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        attrs = record.__dict__
        span = attrs.get("otel_span")  # stamped by _SpanFilter in the caller's context
        if span is not None and span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        fields = attrs.get("fields")
        if isinstance(fields, dict):
            out.update(fields)  # a call record's own span ids win over the ambient ones
        extras = attrs.keys() - _RESERVED
        if extras:
            for name in sorted(extras):
                if name not in out:  # never shadows the line's own keys
                    out[name] = REDACTED if is_secret_key(name) else redact(attrs[name])
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = record.stack_info
        return render_line(out)


def render_line(out: dict[str, Any]) -> str:
    """``out`` as one JSON line, with every registered secret masked wherever it ended up."""
    line = _dumps(out)
    # Last line of defence: the values are scrubbed, not the line, so a match can never
    # break the JSON.
    if contains_secret(line):
        line = _dumps(scrub_deep(out))
    return line


def _dumps(out: dict[str, Any]) -> str:
    try:
        return orjson.dumps(out, default=str).decode()
    except TypeError:  # a dict under an ``extra=`` attribute with non-string keys
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _ScrubbingFormatter(logging.Formatter):
    """The plain-text formatter, with registered secrets masked in the whole line."""

    def format(self, record: logging.LogRecord) -> str:
        """The stock line, scrubbed."""
        return scrub(super().format(record))


class _SpanFilter(logging.Filter):
    """Stamps the current span's context on the record while it is still in its task, when tracing is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        # With tracing off there are no spans of ours to name: one attribute test, no
        # context look-up (11k instructions a record, measured with callgrind).
        if tracing.is_enabled():
            record.otel_span = trace.get_current_span().get_span_context()
        return True


class BufferedLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats on the caller's thread, writes in batches: one syscall per batch, not per line.

    The stock ``StreamHandler`` writes and flushes every record (a syscall each). Here
    lines gather in memory and are written ``interval`` seconds after the first of a
    batch: by the event loop they were logged on (a ``call_later`` armed when the buffer
    goes non-empty, nothing per line), or, for lines logged outside a running loop, by a
    flusher thread woken for them. A full buffer, a warning or an error, and ``close()``
    write at once. The thread also checks once a second that a flush armed on a loop did
    run (a loop stopped with it pending: a sync client's closed private loop), so such
    lines wait two seconds at most. The flusher holds the GIL only to take the lines: a
    thread that formatted records would contend with the event loop for the GIL on every
    call. ``close()`` flushes, so nothing is lost on shutdown; ``configure_logging``
    registers that with ``atexit``. ``close()`` may run any number of times
    (``stop_logging`` at exit, then ``logging.shutdown``).

    ``push`` appends without the handler's lock (the call log's fast path): a writer
    copies the buffer and deletes that many lines from its front, each one step under
    the GIL, so a line appended in between stays for the next batch.
    """

    #: How late (seconds) a flush armed on a loop may run before the flusher thread writes instead.
    _GRACE = 1.0

    def __init__(self, stream: IO[str], interval: float = 0.05, max_lines: int = 512) -> None:
        super().__init__(stream)
        #: The lines not written yet (``push`` and the call log append to it).
        self.lines: list[str] = []
        self._interval = interval
        self.max_lines = max_lines
        # When (time.time()) the flush armed for the buffered lines should have run; 0 when
        # none is armed, so the next line arms one. Read per line: a float comparison.
        self.due = 0.0
        # Not ``_closed``: logging.Handler.close() sets ``self._closed = True`` (3.10+),
        # which replaced the event and broke the next close() with an AttributeError.
        self._stop_flusher = threading.Event()
        self._wake = threading.Event()  # lines were logged outside a running loop
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flusher", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Format now (the record's context is here), write later."""
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the caller: it reports and goes on
            self.handleError(record)
            return
        self.push(line, record.created)
        if record.levelno >= logging.WARNING:
            self.flush()

    def push(self, line: str, now: float) -> None:
        """Buffer one rendered line (``now`` is its ``time.time()``); the first of a batch arms its flush."""
        lines = self.lines
        lines.append(line)
        if now > self.due:
            self.arm(now)
        if len(lines) >= self.max_lines:
            self.flush()

    def arm(self, now: float) -> None:
        """Arrange for the buffer to be written: on the running loop if there is one, else by the thread."""
        self.due = now + self._interval + self._GRACE
        if self._stop_flusher.is_set():  # closed: nothing else will write it
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a plain thread, or after the loop stopped
            self._wake.set()
        else:
            loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Write every gathered line with one write and one flush."""
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        self.due = 0.0  # a line logged from here on arms a flush of its own
        lines = self.lines
        if not lines:
            return
        batch = lines[:]
        del lines[: len(batch)]  # not a new list: push() may hold this one
        if self.stream is None:
            return
        try:
            self.stream.write("\n".join(batch) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must not break the caller

    def _flush_loop(self) -> None:
        lock = self.lock
        assert lock is not None  # noqa: S101 - Handler.__init__ created it
        stop = self._stop_flusher
        while True:
            woken = self._wake.wait(self._GRACE)
            if stop.is_set():
                return
            if woken:
                self._wake.clear()
                if stop.wait(self._interval):  # a batch: what else is logged meanwhile
                    return
            elif not self.lines or time.time() <= self.due:
                continue  # nothing waits, or the flush armed on its loop is not late yet
            # A bounded wait for the lock: logging.shutdown() holds it while it calls
            # close(), which joins this thread; a blocking acquire would wait for that.
            if lock.acquire(timeout=self._interval):
                try:
                    self._write()
                finally:
                    lock.release()
            else:
                self._wake.set()  # try again after the next interval

    def close(self) -> None:
        """Stop the flusher and write what is left; safe to call again."""
        self._stop_flusher.set()
        self._wake.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self.flush()
        super().close()


class CallLogRoute(NamedTuple):
    """What ``configure_logging`` installed, for the lines that may skip ``logging`` (``call_log``)."""

    handler: BufferedLogHandler
    formatter: JsonFormatter
    span_filter: logging.Filter


#: Set while the handler ``configure_logging`` installed is JSON and batched; None otherwise.
route: CallLogRoute | None = None

_installed: list[logging.Handler] = []
# logging's module switches as they were before configure_logging changed them.
_saved_switches: dict[str, Any] = {}
_SWITCHES = {"_srcfile": None, "logThreads": False, "logProcesses": False, "logMultiprocessing": False}


def _foreign_handlers() -> bool:
    """True when any logger has a handler this module did not install (libraries' NullHandlers aside)."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    return any(
        h not in _installed and not isinstance(h, logging.NullHandler)
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
    )


def stop_logging() -> None:
    """Flush, close and detach the handlers ``configure_logging`` installed; others stay."""
    global route  # noqa: PLW0603 - the one switch the call log's fast path reads
    route = None  # first: no line goes straight to a handler being closed
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
    for name, value in _saved_switches.items():
        setattr(logging, name, value)
    _saved_switches.clear()


def configure_logging(
    level: str = "INFO", *, json: bool = True, stream: IO[str] | None = None, background: bool = True
) -> logging.Handler:
    """Add one handler to the root logger, writing to ``stream`` (stderr); returns it.

    Handlers this function did not install are left as they are: a second call (or
    ``stop_logging``) replaces or removes only its own. uvicorn's loggers propagate to
    the root unless uvicorn was given a logging config of its own: run it with
    ``log_config=None`` (``python -m app`` does) for its lines in the same JSON.

    With ``background`` lines are written in batches (``BufferedLogHandler``); without
    it, each record is written and flushed at once. The formatter is the same. Either
    way registered secrets are masked. With JSON lines in batches, the client's call log
    lines skip ``logging`` while this handler is the only one they would reach (see
    ``app.observability.call_log``): the same lines, several times cheaper.
    """
    global route  # noqa: PLW0603 - the one switch the call log's fast path reads
    stop_logging()
    if not _foreign_handlers():
        # logging's documented optimisations: no caller frame walk, no thread or process
        # lookups per record. The JSON lines do not show them; another handler's
        # format might, so they apply only while this is the only handler, until
        # stop_logging puts them back.
        for name, value in _SWITCHES.items():
            _saved_switches[name] = getattr(logging, name)
            setattr(logging, name, value)
    formatter: logging.Formatter = (
        JsonFormatter() if json else _ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    target = stream or sys.stderr
    handler: logging.Handler = BufferedLogHandler(target) if background else logging.StreamHandler(target)
    handler.setFormatter(formatter)
    span_filter = _SpanFilter()
    handler.addFilter(span_filter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    _installed.append(handler)
    if isinstance(handler, BufferedLogHandler) and isinstance(formatter, JsonFormatter):
        route = CallLogRoute(handler, formatter, span_filter)
    return handler


atexit.register(stop_logging)
