"""Structured JSON logging for the service and uvicorn alike, scrubbed of secrets."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from app.observability.redaction import scrub

__all__ = ["JsonFormatter", "configure_logging"]


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
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
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


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Send the root logger, and uvicorn's loggers through it, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
