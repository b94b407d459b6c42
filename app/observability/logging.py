"""Structured JSON logging for the service and uvicorn alike, scrubbed of secrets, off the hot path."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from opentelemetry import trace

from app.redaction import REDACTED, contains_secret, is_secret_key, redact, scrub, scrub_deep

__all__ = ["BufferedLogHandler", "JsonFormatter", "configure_logging", "stop_logging"]

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ``fields`` and ``extra=`` attributes.

    Every registered secret is masked, wherever it ended up; the values of ``extra=``
    attributes whose names look like credentials (``api_key``, ``password``) too.
    """

    _second = -1
    _prefix = ""

    def _timestamp(self, created: float) -> str:
        # Building a datetime per record costs more than the rest of the line: the
        # date-and-seconds part is computed once a second.
        second = int(created)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line, with known secrets scrubbed out."""
        out: dict[str, Any] = {
            "ts": self._timestamp(record.created),
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
        line = _dumps(out)
        # Last line of defence: a registered secret is removed wherever it ended up. The
        # values are scrubbed, not the line, so a match can never break the JSON.
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
    """Stamps the current span's context on the record while it is still in its task."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.otel_span = trace.get_current_span().get_span_context()
        return True


class BufferedLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats on the caller's thread, writes in batches: one syscall per batch, not per line.

    The stock ``StreamHandler`` writes and flushes every record (a syscall each). Here
    lines gather in memory; a flusher thread writes them every ``interval`` seconds, and
    a full buffer, a warning or an error, or ``close()`` writes them at once. The
    flusher holds the GIL only to swap the buffer: a thread that formatted records
    would contend with the event loop for the GIL on every call. ``close()`` flushes,
    so nothing is lost on shutdown; ``configure_logging`` registers that with ``atexit``.
    ``close()`` may run any number of times (``stop_logging`` at exit, then
    ``logging.shutdown``).
    """

    def __init__(self, stream: IO[str], interval: float = 0.05, max_lines: int = 512) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._interval = interval
        self._max_lines = max_lines
        # Not ``_closed``: logging.Handler.close() sets ``self._closed = True`` (3.10+),
        # which replaced the event and broke the next close() with an AttributeError.
        self._stop_flusher = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flusher", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Format now (the record's context is here), write later."""
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the caller: it reports and goes on
            self.handleError(record)
            return
        lines = self._lines
        lines.append(line)
        if len(lines) >= self._max_lines or record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        """Write every gathered line with one write and one flush."""
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        lines, self._lines = self._lines, []
        if not lines or self.stream is None:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must not break the caller

    def _flush_loop(self) -> None:
        lock = self.lock
        assert lock is not None  # noqa: S101 - Handler.__init__ created it
        while not self._stop_flusher.wait(self._interval):
            # A bounded wait for the lock: logging.shutdown() holds it while it calls
            # close(), which joins this thread; a blocking acquire would wait for that.
            if self._lines and lock.acquire(timeout=self._interval):
                try:
                    self._write()
                finally:
                    lock.release()

    def close(self) -> None:
        """Stop the flusher and write what is left; safe to call again."""
        self._stop_flusher.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self.flush()
        super().close()


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
    way registered secrets are masked.
    """
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
    handler.addFilter(_SpanFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    _installed.append(handler)
    return handler


atexit.register(stop_logging)
