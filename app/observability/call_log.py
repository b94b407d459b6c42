"""The call log's fast path: a client's lines rendered with orjson straight into the log handler's buffer."""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any

import orjson
from opentelemetry import trace

from app.observability import logging as log_setup
from app.observability.logging import MILLIS
from app.observability.tracing import tracing
from app.redaction import contains_secret

__all__ = ["fields_of", "write_line"]

_root = logging.root
_LogRecord = logging.LogRecord


def write_line(logger: logging.Logger, levelno: int, line: dict[str, Any]) -> bool:
    """Write ``line`` straight to ``configure_logging``'s handler; False when it must be a record.

    ``line`` is the whole JSON line as a dict, ``{"ts": None, "level": "INFO", "logger":
    logger.name, "message": ..., **fields}`` (the level's name, the logger's name, the
    record's message, in that order, and fields that hold none of these four keys); its
    ``ts`` is filled in here. The caller has checked ``logger.isEnabledFor(levelno)``.

    A line may skip ``logging`` only where a record would have reached nothing but that
    handler, unfiltered by anyone else: no handler or filter on ``logger``, none on its
    ancestors up to the root, propagation on, only that handler on the root, with its
    level, its one filter (the span stamper) and its JSON formatter, and the stock
    record factory (a custom one may add attributes). That is checked per line (a few
    attribute reads), so a handler a user adds at any time, to any of these loggers,
    gets records from the next line on; so does a text format, an unbatched handler or
    ``stop_logging``. The line written is then byte for byte what the formatter would
    have written for ``logger.log(levelno, message, extra={"fields": fields_of(line)})``:
    the same keys in the same order, the ambient span's ids when tracing is on, and
    registered secrets masked. ``time.time()`` is read once, for the time stamp and for
    the handler's batch.
    """
    route = log_setup.route
    if route is None:
        return False
    handler, formatter, span_filter = route
    # Inline rather than in helpers: this runs per call, and a Python call costs about
    # as much as all these attribute reads together.
    if logger.handlers or logger.filters or not logger.propagate:
        return False
    parent = logger.parent
    if parent is not _root and not _through(parent):
        return False
    handlers = _root.handlers
    filters = handler.filters
    if (
        len(handlers) != 1
        or handlers[0] is not handler
        or handler.level > levelno
        or len(filters) != 1
        or filters[0] is not span_filter
        or handler.formatter is not formatter
        or logging.getLogRecordFactory() is not _LogRecord
    ):
        return False
    now = time.time()
    second = int(now)
    if second != formatter.second:
        formatter.timestamp(now)  # a new second: the formatter's cached date-and-seconds part
    line["ts"] = formatter.prefix + MILLIS[int((now - second) * 1000)]
    try:
        text = _render(line)
    except Exception:
        # An int past 64 bits in a field, say: logging never raises into the caller. A
        # record instead, whose handler reports the error (handleError) and goes on.
        return False
    # The handler's push(), inline: append, arm the batch's flush if none is, write a full one.
    lines = handler.lines
    lines.append(text)
    if now > handler.due:
        handler.arm(now)
    if len(lines) >= handler.max_lines:
        handler.flush()
    return True


def _render(line: dict[str, Any]) -> str:
    """``line`` as the formatter renders it: orjson, span ids when tracing is on, secrets masked."""
    if tracing.enabled:
        return _traced(line)
    # The formatter's dict is the head and then the fields: this one already is.
    try:
        text = orjson.dumps(line, default=str).decode()
    except TypeError:  # a dict with non-string keys: render_line knows what to do
        return log_setup.render_line(line)
    if contains_secret(text):  # as the formatter does: the values scrubbed, not the line
        return log_setup.render_line(line)
    return text


def fields_of(line: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``write_line`` dict (all but its first four keys), for the record instead."""
    return dict(islice(line.items(), 4, None))


def _traced(line: dict[str, Any]) -> str:
    """``line`` with the ambient span's ids after the message, where the span filter's stamp puts them."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return log_setup.render_line(line)
    out: dict[str, Any] = dict(islice(line.items(), 4))
    out["trace_id"] = format(context.trace_id, "032x")
    out["span_id"] = format(context.span_id, "016x")
    out.update(islice(line.items(), 4, None))  # a call's own span ids win, in place
    return log_setup.render_line(out)


def _through(node: logging.Logger | None) -> bool:
    """True when ``node`` and its ancestors below the root have no handler and propagate."""
    while node is not _root:
        if node is None or node.handlers or not node.propagate:
            return False
        node = node.parent
    return True
