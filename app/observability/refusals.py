"""RefusalTally: refused calls counted per clock second, added to the stats and metrics in batches."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from app.errors import Outcome, Rejection

if TYPE_CHECKING:
    from app.observability.metrics import ClientMetrics
    from app.observability.rolling import RollingStats

__all__ = ["RefusalLog", "RefusalTally"]


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


class RefusalTally:
    """Refusals of the current clock second, by (method, endpoint, reason, outcome).

    A call refused while a dependency is down (open breaker, full bulkhead) costs a dict
    increment under ``lock`` here, where adding it to the rolling stats and the metrics
    as it happened took two locked updates (~8k instructions against ~2.5k; issue 16's
    P5). The tally goes into both (``settle``) when a refusal starts a new second, before
    either is read (``RollingStats.snapshot``, a scrape of the metric families: they hold
    this tally weakly and settle it first), and when its client closes or its observer is
    collected. So every reader sees every refusal, each in the second it happened.

    The observer writes ``counts``, ``second`` and ``until`` itself, under ``lock``: the
    refusal path is its own, inline. ``logs`` is the observer's refusal-line state per
    reason, whose left-out count settling adds to.
    """

    __slots__ = ("__weakref__", "counts", "lock", "logs", "metrics", "second", "stats", "until")

    def __init__(self, stats: RollingStats, metrics: ClientMetrics | None) -> None:
        self.counts: dict[tuple[str, str, Rejection, Outcome], int] = {}
        #: The clock second counted (``int(now)``, as RollingStats buckets it), and its end.
        self.second = 0
        self.until = -math.inf  # the first refusal starts a second
        self.lock = threading.Lock()  # sync twins refuse from their own thread; scrapes from others
        self.logs: dict[str, RefusalLog] = {}
        self.stats = stats
        self.metrics = metrics
        stats.before_read(self.settle)
        if metrics is not None:
            metrics.families.batching(self)

    def settle(self) -> None:
        """Add the refusals counted so far to the rolling stats and the metrics."""
        with self.lock:
            self.settle_locked()

    def settle_locked(self) -> None:
        """``settle`` with ``lock`` held."""
        counts = self.counts
        if not counts:
            return
        self.counts = {}
        second = self.second
        metrics = self.metrics
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
