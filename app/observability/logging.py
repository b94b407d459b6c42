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

from app.observability.redaction import scrub

__all__ = ["BufferedLogHandler", "JsonFormatter", "configure_logging", "stop_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

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
        span = getattr(record, "otel_span", None)  # stamped by _SpanFilter in the caller's context
        if span is not None and span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)  # a call record's own span ids win over the ambient ones
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        line = orjson.dumps(out, default=str).decode()
        # Last line of defence: a registered secret is removed wherever it ended up.
        return scrub(line)


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
    """

    def __init__(self, stream: IO[str], interval: float = 0.05, max_lines: int = 512) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._interval = interval
        self._max_lines = max_lines
        self._closed = threading.Event()
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
            lines, self._lines = self._lines, []
            if not lines or self.stream is None:
                return
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream must not break the caller

    def _flush_loop(self) -> None:
        while not self._closed.wait(self._interval):
            if self._lines:
                self.flush()

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._closed.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=5)
        self.flush()
        super().close()


_installed: list[logging.Handler] = []


def stop_logging() -> None:
    """Flush and close the handlers ``configure_logging`` installed."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()


def configure_logging(
    level: str = "INFO", *, json: bool = True, stream: IO[str] | None = None, background: bool = True
) -> None:
    """Send the root logger, and uvicorn's loggers through it, to ``stream`` (stderr).

    With ``background`` lines are written in batches (``BufferedLogHandler``); without
    it, each record is written and flushed at once. The formatter is the same.
    """
    stop_logging()
    # logging's documented optimisations: no caller frame walk, no thread or process
    # lookups per record; the JSON lines do not show them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter: logging.Formatter = (
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    target = stream or sys.stderr
    handler: logging.Handler = BufferedLogHandler(target) if background else logging.StreamHandler(target)
    handler.setFormatter(formatter)
    handler.addFilter(_SpanFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _installed.append(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True


atexit.register(stop_logging)
