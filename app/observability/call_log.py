"""The call log's fast path: a client's lines rendered straight into the log handler's buffer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from opentelemetry import trace

from app.observability import logging as log_setup
from app.observability.logging import MILLIS
from app.observability.tracing import tracing
from app.redaction import contains_secret

if TYPE_CHECKING:
    from app.errors import ClientError, Outcome
    from app.resilience.pipeline import CallRecord

__all__ = ["CALLS_LOGGER", "CallLines", "call_line", "fields_of", "write_line"]

#: The name of the clients' call log's logger.
CALLS_LOGGER = "app.clients"

_root = logging.root
_LogRecord = logging.LogRecord
L = TypeVar("L")
#: ".0", ".001" to ".999" without trailing zeros: whole milliseconds' fractions as repr writes them.
_FRACTIONS = (".0", *(f".{micros:03d}".rstrip("0") for micros in range(1, 1000)))
#: Micros below which ``_FRACTIONS`` gives repr's text (at most 15 significant digits).
_EXACT = 10**15
#: One call's line, as ``CallLines.render`` takes it: the record, seconds, outcome and error.
CallEnd = tuple["CallRecord", float, "Outcome", "ClientError | None"]


def write_line(
    logger: logging.Logger,
    levelno: int,
    line: L,
    render: Callable[[L, str], str] | None = None,
) -> bool:
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

    With ``render``, ``line`` is whatever that function takes, with the time stamp, to
    give the same text (``CallLines.render``, a call's line from cached pieces).
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
    # The first ancestor inline (app.clients' is "app", whose parent is the root): the
    # common case pays no call to _through.
    if parent is not _root and (
        parent is None  # a logger made outside the manager's tree
        or parent.handlers
        or not parent.propagate
        or (parent.parent is not _root and not _through(parent.parent))
    ):
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
        # getLogRecordFactory()'s own global, read without its call (~300 instructions).
        or logging._logRecordFactory is not _LogRecord  # type: ignore[attr-defined]
    ):
        return False
    now = time.time()
    second = int(now)
    if second != formatter.second:
        formatter.timestamp(now)  # a new second: the formatter's cached date-and-seconds part
    ts = formatter.prefix + MILLIS[int((now - second) * 1000)]
    try:
        text = _render(line, ts) if render is None else render(line, ts)  # type: ignore[arg-type]
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


def _render(line: dict[str, Any], ts: str) -> str:
    """``line`` stamped ``ts``, as the formatter renders it: span ids when tracing is on, secrets masked."""
    line["ts"] = ts
    if tracing.is_enabled():
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


def call_line(
    record: CallRecord, seconds: float, outcome: Outcome, error: ClientError | None
) -> dict[str, Any]:
    """A call's line as a ``write_line`` dict: the head, then its fields in the formatter's order."""
    line: dict[str, Any] = {
        "ts": None,
        "level": "INFO",
        "logger": CALLS_LOGGER,
        "message": f"call {record.method} {record.endpoint} {outcome}",  # "call %s %s %s" % ...
        "peer.service": record.service,  # OpenTelemetry's name for the service called
        "method": record.method,
        "endpoint": record.endpoint,
        "status": record.status,
        # Milliseconds to the microsecond: round(ms, 3)'s value (but within a rounding
        # error of a half-microsecond tie) at a tenth of its cost (it goes through a
        # decimal string), the hot path's price for a call inline.
        "duration_ms": int(seconds * 1_000_000 + 0.5) / 1000,
        "attempts": record.attempts,
        "outcome": outcome,
        "error": None if error is None else type(error).__name__,
        "request_id": record.request_id,
    }
    if record.instance is not None:  # the upstream has several: the last attempt's
        line["server.address"] = record.instance
    return line


class CallLines:
    """One client's call lines, rendered from pieces cached per (method, endpoint, outcome, ...).

    Of a call's line only the duration, the attempts and the request id change from one
    call to the next of the same kind: the rest is rendered by orjson once per kind and
    kept, so a line is one f-string, not a 14-key dict and its serialisation (22.9k to
    19.1k instructions a line, callgrind, with the route checks). The text is byte for
    byte ``call_line``'s as the formatter renders it: each cached piece is orjson's own
    rendering of its keys, the duration is the digits of its float's ``repr`` (which
    orjson writes too), and a request id goes in bare only when alphanumeric (nothing in
    it that JSON escapes). A line holding a registered secret, or any call while tracing
    is on (the ambient span's ids), is rendered from ``call_line`` instead, as before.
    """

    __slots__ = ("_pieces",)

    #: Kinds kept before the cache starts over: endpoints are a client's own names, but a
    #: caller formatting ids into them must not grow it without bound.
    MAX_KINDS = 4096

    def __init__(self) -> None:
        self._pieces: dict[tuple[Any, ...], tuple[str, str, str]] = {}

    def render(self, call: CallEnd, ts: str) -> str:
        """The line of ``call`` stamped ``ts`` (a ``write_line`` renderer)."""
        record, seconds, outcome, error = call
        if tracing.is_enabled():
            return _render(call_line(record, seconds, outcome, error), ts)
        attempts = record.attempts  # few values: part of the kind, not formatted per line
        kind = (
            record.service, record.method, record.endpoint, record.status,
            attempts, outcome, error.__class__, record.instance,
        )  # fmt: skip
        pieces = self._pieces.get(kind)
        if pieces is None:
            pieces = self._pieces_of(kind, call)
        head, middle, tail = pieces
        micros = int(seconds * 1_000_000 + 0.5)  # call_line's duration_ms, times 1000
        # That float's repr (orjson writes the same) from its digits: repr's float-to-text
        # costs ~2k instructions. Below 10**15 micros a float of whole micros / 1000 has
        # at most 15 significant digits, so its shortest repr is exactly those digits.
        ms = f"{micros // 1000}{_FRACTIONS[micros % 1000]}" if 0 <= micros < _EXACT else repr(micros / 1000)
        rid = record.request_id
        if not rid.isalnum():  # escaped as orjson escapes it, without its quotes
            rid = orjson.dumps(rid).decode()[1:-1]
        text = f'{{"ts":"{ts}",{head}{ms}{middle}{rid}{tail}'
        if contains_secret(text):  # the formatter's way: the values scrubbed, not the line
            return _render(call_line(record, seconds, outcome, error), ts)
        return text

    def _pieces_of(self, kind: tuple[Any, ...], call: CallEnd) -> tuple[str, str, str]:
        """The constant parts of ``call``'s line, each orjson's rendering of its keys in ``call_line``."""
        items = list(call_line(*call).items())
        names = [k for k, _ in items]
        if names[8:10] != ["duration_ms", "attempts"] or names[12] != "request_id":
            raise AssertionError("call_line's keys moved: CallLines cuts its pieces by position")

        def keys(start: int, stop: int | None = None) -> str:
            return orjson.dumps(dict(items[start:stop]), default=str).decode()[1:-1]

        rest = keys(13)  # server.address, when the upstream has several instances
        pieces = (
            keys(1, 8) + ',"duration_ms":',
            "," + keys(9, 12) + ',"request_id":"',
            '"}' if not rest else '",' + rest + "}",
        )
        if len(self._pieces) >= self.MAX_KINDS:
            self._pieces.clear()
        self._pieces[kind] = pieces
        return pieces
