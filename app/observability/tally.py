"""CallTally: a client's calls counted per clock second, added to its stats and metrics in batches."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from app.observability.metrics import Calls, Refusals

if TYPE_CHECKING:
    from app.observability.metrics import ClientMetrics
    from app.observability.rolling import RollingStats

__all__ = ["CallTally", "HELD_PER_KIND", "RefusalLog"]

#: Calls of one kind held before the tally is settled within its second: the settling
#: runs on the call that ends the batch, so what it sorts stays small (~0.1 ms of work,
#: not the milliseconds a whole busy second's would take, once a second).
HELD_PER_KIND = 1024


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
    rounding for kinds that share an endpoint's histogram). A kind's seconds are held
    until it is settled, at most ``HELD_PER_KIND`` of them: a busy second is settled in
    slices of that many.

    The observer writes ``calls``, ``counts``, ``second`` and ``until`` itself, under
    ``lock``: the per-call paths are its own, inline. ``logs`` is the observer's
    refusal-line state per reason, whose left-out count settling adds to.
    """

    __slots__ = ("__weakref__", "calls", "counts", "lock", "logs", "metrics", "second", "stats", "until")

    def __init__(self, stats: RollingStats, metrics: ClientMetrics | None) -> None:
        #: Finished calls that sent an attempt, by kind: [attempts in all, each call's seconds...].
        self.calls: Calls = {}
        self.counts: Refusals = {}
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
        calls, refusals = self.calls, self.counts
        if not calls and not refusals:
            return
        self.calls, self.counts = {}, {}
        second, stats, logs = self.second, self.stats, self.logs
        for (_, _, outcome, _), entry in calls.items():
            stats.finished(outcome, entry[1:], second)
        for (_, _, reason, outcome), count in refusals.items():
            stats.refused(outcome, count, second)
            sampled = logs.get(reason)
            if sampled is not None:
                sampled.unlogged += count
        if self.metrics is not None:
            self.metrics.add(calls, refusals)

    def leave(self) -> None:
        """Its observer is going: what it counted goes into the metrics, this tally's lock only tried.

        The observer's ``__del__`` calls this, and the gc may run that inside a region
        holding this very lock, in this thread (a collection starts at any allocation of
        a tracked object): waiting for it would be for ever. If anyone holds it, they
        are settling (a going observer makes no calls) and take every count. The
        metrics' locks are re-entrant, for the same reason (``MetricFamilies.lock``).
        The rolling stats go with the observer: nothing can read them any more.
        """
        if not self.lock.acquire(blocking=False):
            return
        try:
            calls, refusals = self.calls, self.counts
            self.calls, self.counts = {}, {}
        finally:
            self.lock.release()
        if (calls or refusals) and self.metrics is not None:
            self.metrics.add(calls, refusals)
