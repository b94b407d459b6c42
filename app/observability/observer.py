"""CallObserver: one place where a client's calls become logs, metrics, rolling stats and spans."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from app.errors import ClientError, Outcome, Rejection
from app.observability.call_log import CALLS_LOGGER, CallLines, call_line, fields_of, write_line
from app.observability.metrics import ClientMetrics, MetricFamilies, default_families
from app.observability.rolling import RollingStats
from app.observability.tally import HELD_PER_KIND, CallTally, RefusalLog
from app.observability.tracing import end_cancelled, end_span, start_attempt_span, start_call_span, tracing
from app.redaction import REDACTED, is_secret_key, redact, truncate
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.pipeline import CallRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from yarl import URL

__all__ = ["CallObserver"]

logger = logging.getLogger(CALLS_LOGGER)
_INFO = logging.INFO
_DEBUG = logging.DEBUG


class CallObserver:
    """Records what one client's calls did; the pipeline reports its events here too.

    Per call the cost is the rolling-window tally, the cached metric children and,
    when INFO is enabled for ``app.clients``, one log line: rendered with orjson
    straight into ``configure_logging``'s buffer when nothing else would see the record
    (``app.observability.call_log``), else a record whose fields are a plain dict. It
    also keeps the call's spans (a CLIENT span per call, a child per attempt): with
    tracing off that costs one test of ``record.span`` per event.

    Refusals (open breaker, full bulkhead) are logged once per second of ``clock`` (whole
    seconds) per reason: the first of a reason in a second at once, the rest of that
    second only counted; the reason's next line carries that count as ``suppressed``.
    A burst's last count is therefore written with the next refusal for its reason,
    whenever that comes. Metrics and the rolling stats count every call, finished or
    refused: tallied per second, and added before either is read (``CallTally``).
    """

    def __init__(
        self,
        service: str,
        *,
        metrics: bool = True,
        log_calls: bool = True,
        log_request_body: bool = False,
        log_response_body: bool = False,
        families: MetricFamilies | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.service = service
        self.metrics = ClientMetrics(service, families or default_families()) if metrics else None
        self.stats = RollingStats(clock=clock)
        self.log_calls = log_calls
        self.log_request_body = log_request_body
        self.log_response_body = log_response_body
        self._clock = clock
        # Calls are counted per clock second, and added to the stats and metrics in
        # batches (see CallTally); the rest are settled when this observer goes (__del__).
        self._tally = CallTally(self.stats, self.metrics)
        # The renderer of this client's common lines, bound once: not a bound method per call.
        self._render_line = CallLines().render

    def __del__(self) -> None:
        # The last second's calls of a client dropped without close(), into the metrics
        # (CallTally.leave: the gc may run this inside any lock of ours, so none is waited
        # for; the rolling stats go with the observer). Not a
        # weakref.finalize: its registry would hold the tally, and through it the metric
        # families, until this observer went, so a registry's families (and prometheus_client's
        # own cycles in them) would reach the gc one collection later than the observer.
        tally = getattr(self, "_tally", None)  # None: __init__ did not get that far
        if tally is not None:
            tally.leave()

    # -- pipeline events ---------------------------------------------------------------

    def retry(self, record: CallRecord, error: ClientError, wait: float) -> None:
        """A failed attempt will be retried after ``wait`` seconds."""
        self.stats.retry()
        if self.metrics is not None:
            self.metrics.retry(error.outcome)
        if record.span is not None:
            record.span.add_event(
                "retry", {"attempt": record.attempts, "reason": error.outcome, "wait_seconds": wait}
            )

    def rejected(self, record: CallRecord, reason: Rejection) -> None:
        """A policy refused the call (breaker_open, bulkhead_full, rate_limited, budget_exhausted)."""
        self.stats.rejection()
        if self.metrics is not None:
            self.metrics.rejection(reason)
        if record.span is not None:
            record.span.add_event("rejected", {"reason": reason})

    def refused(
        self, method: str, endpoint: str, reason: Rejection, error: ClientError, *, fallback: bool = False
    ) -> None:
        """A call refused before it started (open breaker, full bulkhead): the lean path.

        The same counts as ``rejected`` plus ``finished``: this runs for every call while
        a dependency is down, so it is kept to a few microseconds. The counts go into
        this second's tally (see ``settle``); the call record is made only for a line
        that is written.
        """
        outcome: Outcome = "fallback" if fallback else error.outcome
        key = (method, endpoint, reason, outcome)
        tally = self._tally
        lock = tally.lock
        lock.acquire()
        try:
            now = self._clock.now()
            if tally.second <= now < tally.until:
                try:
                    tally.counts[key] += 1
                except KeyError:
                    tally.counts[key] = 1
                else:
                    # Not its key's first in this second, so not its reason's: that one
                    # decided this second's line. The common refusal ends here.
                    return
            else:  # a new second (or the clock went back): the last one's tally goes in first
                tally.start_second(now)
                tally.counts[key] = 1
            suppressed = self._refusal_line(reason)
        finally:
            lock.release()
        if suppressed is not None:  # written outside the lock: a handler may be slow
            record = CallRecord(self.service, method, endpoint, "")
            self._log(record, 0.0, outcome, error, None, None, suppressed)

    def _refusal_line(self, reason: Rejection) -> int | None:
        """Whether this second's first refusal of ``reason`` is logged: its ``suppressed`` count, or None.

        Called with the tally's lock held, for the first refusal of each key in a second:
        the first of its reason writes the line (when lines are on), the others nothing.
        """
        tally = self._tally
        sampled = tally.logs.get(reason)
        if sampled is None:
            sampled = tally.logs[reason] = RefusalLog()
        if sampled.second == tally.second:
            return None
        sampled.second = tally.second
        # The logger's level is asked once a second per reason, not per refusal.
        if not (self.log_calls and logger.isEnabledFor(_INFO)):
            sampled.quiet = True  # what it leaves out is not counted on the next line
            return None
        suppressed = 0 if sampled.quiet else sampled.unlogged
        sampled.quiet = False
        sampled.unlogged = -1  # this line's refusal is in the tally: it is not left out
        return suppressed

    def settle(self) -> None:
        """Add the calls counted so far to the rolling stats and the metrics (see CallTally)."""
        self._tally.settle()

    def hedged(self, record: CallRecord) -> None:
        """A backup attempt started alongside a slow one."""
        if self.metrics is not None:
            self.metrics.hedge()
        if record.span is not None:
            record.span.add_event("hedge", {"attempt": record.attempts})

    def breaker_changed(self, old: str, new: str) -> None:
        """The breaker moved from ``old`` to ``new``."""
        if self.metrics is not None:
            self.metrics.transition(old, new)
        fields = {"peer.service": self.service, "event": "circuit_state", "from": old, "to": new}
        logger.warning("circuit %s: %s -> %s", self.service, old, new, extra={"fields": fields})

    # -- one logical call and its attempts --------------------------------------------

    @staticmethod
    def call_started(record: CallRecord, url: URL) -> bool:
        """A call is about to run: its span opens when tracing is on. True when it did."""
        if not tracing.is_enabled():
            return False
        record.span = start_call_span(record, url)
        return True

    @staticmethod
    def attempt_started(record: CallRecord, headers: MutableMapping[str, str]) -> Span | None:
        """An attempt is about to be sent: in a traced call, its span, whose context goes into ``headers``."""
        return None if record.span is None else start_attempt_span(record, headers)

    @staticmethod
    def attempt_ended(
        record: CallRecord, span: Span | None, error: BaseException | None, params: Mapping[str, Any] | None
    ) -> None:
        """An attempt ended (``error`` None when it was answered): its span closes, DEBUG logs it."""
        if span is not None:
            if isinstance(error, asyncio.CancelledError):  # a hedge's loser, a caller gone, close()
                end_cancelled(span)
            else:
                end_span(span, record, error)
        if logger.isEnabledFor(_DEBUG):
            _log_attempt(record, params)

    def invalid_answer(self, record: CallRecord, problem: str) -> None:
        """An answer that did not match its model was let through (``lax``): logged and counted."""
        if self.metrics is not None:
            self.metrics.invalid_answer(record.method, record.endpoint)
        # The problem names fields and the model, never values (see app.clients.validation).
        logger.warning(
            "answer let through unvalidated: %s",
            problem,
            extra={"fields": {"peer.service": record.service, "request_id": record.request_id}},
        )

    @staticmethod
    def call_cancelled(record: CallRecord) -> None:
        """A call was cancelled by its caller: its span closes as such; nothing is counted."""
        if record.span is not None:
            end_cancelled(record.span)

    def call_ended(
        self,
        record: CallRecord,
        seconds: float,
        error: ClientError | None,
        sent: Any = None,
        received: Any = None,
        *,
        fallback: bool = False,
    ) -> None:
        """One logical call ended, with a result (possibly a fallback) or ``error``."""
        if record.span is not None:
            end_span(record.span, record, error)
        outcome: Outcome = "fallback" if fallback else "success" if error is None else error.outcome
        attempts = record.attempts
        if attempts:
            # Into this second's tally (see CallTally), inline: its kind's attempts added
            # up and its seconds kept, for the stats and metrics to take in one batch.
            key = (record.method, record.endpoint, outcome, record.status)
            tally = self._tally
            lock = tally.lock
            lock.acquire()
            try:
                now = self._clock.now()
                if not tally.second <= now < tally.until:  # a new second, or the clock went back
                    tally.start_second(now)
                try:
                    entry = tally.calls[key]
                except KeyError:
                    entry = tally.calls[key] = [0]
                entry[0] += attempts
                entry.append(seconds)
                if len(entry) > HELD_PER_KIND:  # a busy second settles in slices (see CallTally)
                    tally.settle_locked()
            finally:
                lock.release()
        else:  # nothing sent (a policy refused it in the pipeline): no latency, counted at once
            self.stats.record(outcome, None)
            if self.metrics is not None:
                self.metrics.call(record.method, record.endpoint, outcome, record.status, seconds, 0)
                if fallback:
                    self.metrics.fallback()
        # isEnabledFor(INFO) as it answers itself, without its call: not disabled, then its
        # per-level cache (which logging clears on every level change), else the call.
        if (
            self.log_calls
            and not logger.disabled
            and (logger._cache.get(_INFO) or logger.isEnabledFor(_INFO))  # type: ignore[attr-defined]
        ):
            self._log(record, seconds, outcome, error, sent, received)  # by position: the cheapest

    def _log(  # noqa: PLR0917 - once per call: positional arguments cost the least
        self,
        record: CallRecord,
        seconds: float,
        outcome: Outcome,
        error: ClientError | None,
        sent: Any,
        received: Any,
        suppressed: int = 0,
    ) -> None:
        # The common line (no span of its own, no bodies, nothing suppressed) from the
        # cached pieces of its kind (CallLines); any other from its dict.
        plain = (
            record.span is None
            and not suppressed
            and (sent is None or not self.log_request_body)
            and (received is None or not self.log_response_body)
        )
        if plain and write_line(logger, _INFO, (record, seconds, outcome, error), self._render_line):
            return
        line = call_line(record, seconds, outcome, error)
        if not plain:
            if record.span is not None:
                context = record.span.get_span_context()
                line["trace_id"] = format(context.trace_id, "032x")
                line["span_id"] = format(context.span_id, "016x")
            if self.log_request_body and sent is not None:
                line["request_body"] = truncate(orjson.dumps(redact(sent), default=str).decode())
            if self.log_response_body and received is not None:
                line["response_body"] = truncate(orjson.dumps(redact(received), default=str).decode())
            if suppressed:
                line["suppressed"] = suppressed  # refusals left out of the log since the last line
            if write_line(logger, _INFO, line):
                return
        fields = fields_of(line)
        logger.info("call %s %s %s", record.method, record.endpoint, outcome, extra={"fields": fields})


def _log_attempt(record: CallRecord, params: Mapping[str, Any] | None) -> None:
    line = {
        "ts": None,
        "level": "DEBUG",
        "logger": CALLS_LOGGER,
        "message": f"attempt {record.method} {record.endpoint}",  # "attempt %s %s" % ...
        "peer.service": record.service,
        "method": record.method,
        "endpoint": record.endpoint,
        "attempt": record.attempts,
        "server.address": record.instance,
        "status": record.status,
        "request_id": record.request_id,
        # By name and by value: a key sent under an innocuous name ("q") is masked
        # in the record itself, for every handler, not only by the JSON formatter.
        "params": {k: REDACTED if is_secret_key(k) else redact(v) for k, v in (params or {}).items()},
    }
    if not write_line(logger, _DEBUG, line):
        logger.debug("attempt %s %s", record.method, record.endpoint, extra={"fields": fields_of(line)})
