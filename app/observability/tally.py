"""CallTally: a client's calls counted per clock second, added to its stats and metrics in batches."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from app.errors import Outcome, Rejection

if TYPE_CHECKING:
    from app.observability.metrics import ClientMetrics
    from app.observability.rolling import RollingStats

__all__ = ["CallTally", "RefusalLog"]


class RefusalLog:
    """The refusal lines of one reason: the clock second of the last, and what was left out since."""

    __slots__ = ("quiet", "second", "unlogged")

    def __init__(self) -> None:
        self.second: int | None = None
        #: Refusals since the last line, less that line's own: added a second at a time, as
        #: the tally settles (so -1 right after a line, until its second settles).
        self.unlogged = 0
        #: Lines were off (INFO, or the client's call log) when its second began: its
        #: refusals were no lines left out.
        self.quiet = False


class CallTally:
    """A client's calls of the current clock second, finished and refused, by kind.

    Finished calls are keyed by (method, endpoint, outcome, status), refused ones by
    (method, endpoint, reason, outcome).

    Adding each call to the rolling stats and the metrics as it ended took two locked
    updates and two method calls (~10k instructions a call); here a finished call is an
    append to its kind's list under ``lock`` (its attempts added up, its seconds kept in
    call order), and a refused one a dict increment (issue 16's P3 and P5). The tally goes
    into both (``settle``) when a call starts a new second, before either is read
    (``RollingStats.snapshot``, a scrape of the metric families: they hold this tally
    weakly and settle it first), and when its client closes or its observer is collected.
    So every reader sees every call, each in the second it ended, and the same numbers:
    a histogram's buckets and count as each call's own update gave them, and its sum
    (each kind's seconds added in call order: the same float for one kind, within
    rounding for kinds that share an endpoint's histogram). A second's seconds are held
    until it is settled: at most what the process can call in a second (some tens of
    thousands of floats).

    The observer writes ``calls``, ``counts``, ``second`` and ``until`` itself, under
    ``lock``: the per-call paths are its own, inline. ``logs`` is the observer's
    refusal-line state per reason, whose left-out count settling adds to.
    """

    __slots__ = ("__weakref__", "calls", "counts", "lock", "logs", "metrics", "second", "stats", "until")

    def __init__(self, stats: RollingStats, metrics: ClientMetrics | None) -> None:
        #: Finished calls that sent an attempt: [attempts in all, seconds of each call...].
        self.calls: dict[tuple[str, str, Outcome, int | None], list[float]] = {}
        self.counts: dict[tuple[str, str, Rejection, Outcome], int] = {}
        #: The clock second counted (``int(now)``, as RollingStats buckets it), and its end.
        self.second = 0
        self.until = -math.inf  # the first call starts a second
        self.lock = threading.Lock()  # sync twins call from their own thread; scrapes from others
        self.logs: dict[str, RefusalLog] = {}
        self.stats = stats
        self.metrics = metrics
        stats.before_read(self.settle)
        if metrics is not None:
            metrics.families.batching(self)

    def settle(self) -> None:
        """Add the calls counted so far to the rolling stats and the metrics."""
        with self.lock:
            self.settle_locked()

    def start_second(self, now: float) -> None:
        """With ``lock`` held: settle, then count ``now``'s second (a new one, or the clock gone back)."""
        self.settle_locked()
        second = self.second = int(now)  # as RollingStats buckets it
        self.until = second + 1

    def settle_locked(self) -> None:
        """``settle`` with ``lock`` held."""
        second = self.second
        metrics = self.metrics
        calls = self.calls
        if calls:
            self.calls = {}
            for (method, endpoint, outcome, status), entry in calls.items():
                latencies = entry[1:]
                self.stats.finished(outcome, latencies, second)
                if metrics is not None:
                    metrics.finished(method, endpoint, outcome, status, latencies, int(entry[0]))
                    if outcome == "fallback":
                        metrics.fallback(len(latencies))
        counts = self.counts
        if counts:
            self.counts = {}
            logs = self.logs
            for (method, endpoint, reason, outcome), count in counts.items():
                self.stats.refused(outcome, count, second)
                sampled = logs.get(reason)
                if sampled is not None:
                    sampled.unlogged += count
                if metrics is not None:
                    metrics.refused(method, endpoint, reason, outcome, count)
                    if outcome == "fallback":
                        metrics.fallback(count)
