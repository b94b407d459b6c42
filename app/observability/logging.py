"""Structured JSON logging for the service and uvicorn alike, scrubbed of secrets, off the hot path."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from opentelemetry import trace

from app.observability.redaction import scrub

__all__ = ["AsyncLogHandler", "JsonFormatter", "configure_logging", "stop_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line, with known secrets scrubbed out."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = getattr(record, "otel_span", None)
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


class AsyncLogHandler(logging.handlers.QueueHandler):
    """Hands records to a writer thread, so formatting and I/O stay off the event loop.

    The calling thread only enqueues the record (no formatting, unlike the stock
    ``QueueHandler``). Every ``interval`` seconds the writer thread formats what has
    queued up and writes it with one ``write`` and one ``flush``: it does not wake per
    record, which under the GIL would cost the event loop a thread switch per call.
    ``close()`` drains the queue, so no record is lost on shutdown; ``configure_logging``
    registers that with ``atexit``. Warnings and errors are written at once.
    """

    def __init__(self, target: IO[str], formatter: logging.Formatter, interval: float = 0.05) -> None:
        self._queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        super().__init__(self._queue)
        self._target = target
        self._formatter = formatter
        self._interval = interval
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
        self._writer.start()
        self.addFilter(_SpanFilter())

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Enqueue the record as is: the writer formats it."""
        return record

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record; a warning or worse is written without waiting for the tick."""
        self._queue.put_nowait(record)
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def _write_loop(self) -> None:
        q = self._queue
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            batch: list[logging.LogRecord | None] = []
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            lines = [self._formatter.format(r) for r in batch if r is not None]
            if lines:
                try:
                    self._target.write("\n".join(lines) + "\n")
                    self._target.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken stream must not kill the writer
            if any(r is None for r in batch):
                return

    def close(self) -> None:
        """Drain every queued record, then stop the writer."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._wake.set()
            self._writer.join(timeout=5)
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

    With ``background`` the records are formatted and written by a writer thread
    (``AsyncLogHandler``); either way the formatter is the same.
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
    handler: logging.Handler
    if background:
        handler = AsyncLogHandler(target, formatter)
    else:
        handler = logging.StreamHandler(target)
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
