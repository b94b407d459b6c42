"""Rolling window of one dependency's calls, in one-second buckets, as Hystrix kept them."""

from __future__ import annotations

import math
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from app.errors import FAILURE_OUTCOMES, OUTCOMES, Outcome
from app.resilience.clock import MONOTONIC, Clock

__all__ = ["RollingStats"]

_MAX_SAMPLES = 2048  # latency samples kept per bucket: bounded memory at any traffic


class _Bucket:
    __slots__ = ("latencies", "outcomes", "rejections", "retries", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        # A plain dict with every outcome at 0: its ``+= 1`` is the interpreter's fast
        # dict path (a Counter's, a subclass's, costs twice as much), once per call.
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.latencies: list[float] = []
        self.retries = 0
        self.rejections = 0


class RollingStats:
    """Counts by outcome, latencies, retries and rejections over the last ``window`` seconds."""

    def __init__(self, window: int = 10, clock: Clock = MONOTONIC) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()  # sync twins record from their own thread
        self._buckets: list[_Bucket] = []
        self._before_read: weakref.WeakMethod[Callable[[], None]] | None = None

    def before_read(self, settle: Callable[[], None]) -> None:
        """Have ``snapshot`` call ``settle`` (a bound method, held weakly) first: the observer's tally."""
        self._before_read = weakref.WeakMethod(settle)

    def _new_bucket(self, second: int) -> _Bucket:
        buckets = self._buckets
        bucket = _Bucket(second)
        buckets.append(bucket)
        while buckets[0].second <= second - self.window:
            buckets.pop(0)
        return bucket

    # The per-call method finds the current bucket inline (a method call fewer; the others
    # ask _bucket_at), and takes the lock with acquire/release: ``with`` costs about twice
    # as much. Refusals come here a second's worth at a time (``refused``).
    def record(self, outcome: Outcome, seconds: float | None) -> None:
        """One finished logical call; ``seconds`` is None when nothing was sent."""
        lock = self._lock
        lock.acquire()
        try:
            second = int(self._clock.now())  # inside the lock: buckets are made in time order
            buckets = self._buckets
            bucket = buckets[-1] if buckets and buckets[-1].second == second else self._new_bucket(second)
            try:
                bucket.outcomes[outcome] += 1
            except KeyError:  # the outcome of a caller's own ClientError subclass
                bucket.outcomes[outcome] = 1
            if seconds is not None and len(bucket.latencies) < _MAX_SAMPLES:
                bucket.latencies.append(seconds)
        finally:
            lock.release()

    def finished(self, outcome: Outcome, latencies: list[float], second: int) -> None:
        """Calls of ``second`` that ended with ``outcome`` after an attempt, their seconds in ``latencies``.

        The observer tallies its calls per second and adds each second's here in one go
        (see ``CallTally``), as ``refused`` below: the bucket is found, or made in its
        place, unless it has left the window already.
        """
        with self._lock:
            bucket = self._counted(outcome, len(latencies), second)
            if bucket is None:
                return
            room = _MAX_SAMPLES - len(bucket.latencies)
            if room > 0:
                bucket.latencies.extend(latencies[:room])

    def refused(self, outcome: Outcome, count: int = 1, second: int | None = None) -> None:
        """``count`` calls refused by a policy before anything was sent, in ``second`` (default: now).

        The observer tallies refusals per second and adds each second's here in one go,
        possibly after a later second's calls were recorded: its bucket is found, or made
        in its place, unless it has left the window already.
        """
        with self._lock:
            bucket = self._counted(outcome, count, int(self._clock.now()) if second is None else second)
            if bucket is not None:
                bucket.rejections += count

    def _counted(self, outcome: Outcome, count: int, second: int) -> _Bucket | None:
        """With the lock held: ``count`` calls of ``outcome`` in ``second``'s bucket (None: it has left)."""
        bucket = self._bucket_at(second)
        if bucket is not None:
            outcomes = bucket.outcomes
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        return bucket

    def _bucket_at(self, second: int) -> _Bucket | None:
        """The bucket of ``second``, made if need be; None when the window has moved past it."""
        buckets = self._buckets
        if not buckets or buckets[-1].second < second:
            return self._new_bucket(second)
        if second <= buckets[-1].second - self.window:
            return None
        at = len(buckets)
        while at and buckets[at - 1].second >= second:
            at -= 1
        if at < len(buckets) and buckets[at].second == second:
            return buckets[at]
        bucket = _Bucket(second)
        buckets.insert(at, bucket)
        return bucket

    def retry(self) -> None:
        """One retry."""
        with self._lock:
            bucket = self._bucket_at(int(self._clock.now()))
            if bucket is not None:  # None only for a clock gone back past the window
                bucket.retries += 1

    def rejection(self) -> None:
        """One call refused by a policy."""
        with self._lock:
            bucket = self._bucket_at(int(self._clock.now()))
            if bucket is not None:  # None only for a clock gone back past the window
                bucket.rejections += 1

    def snapshot(self) -> dict[str, Any]:
        """Rate, error %, counts, latency percentiles and a per-second series, for the status API."""
        hook = self._before_read
        settle = None if hook is None else hook()
        if settle is not None:
            settle()  # before the lock: the settling takes it
        now = int(self._clock.now())
        with self._lock:
            live = [b for b in self._buckets if b.second > now - self.window]
            counts: Counter[str] = Counter()
            latencies: list[float] = []
            for b in live:
                counts.update(b.outcomes)
                latencies.extend(b.latencies)
            by_second = {b.second: b for b in live}
            series = []
            for second in range(now - self.window + 1, now + 1):
                bucket = by_second.get(second)
                series.append(
                    {
                        "requests": sum(bucket.outcomes.values()) if bucket else 0,
                        "p90_ms": (
                            _percentile(sorted(bucket.latencies), 90) * 1000
                            if bucket and bucket.latencies
                            else None
                        ),
                    }
                )
            retries = sum(b.retries for b in live)
            rejections = sum(b.rejections for b in live)
        total = sum(counts.values())
        failures = sum(n for o, n in counts.items() if o in FAILURE_OUTCOMES)
        latencies.sort()
        return {
            "window_seconds": self.window,
            "requests": total,
            "rate_per_second": total / self.window,
            "error_percent": 100.0 * failures / total if total else 0.0,
            "counts": {o: counts.get(o, 0) for o in OUTCOMES},
            "latency_ms": {
                "p50": _percentile(latencies, 50) * 1000 if latencies else None,
                "p90": _percentile(latencies, 90) * 1000 if latencies else None,
                "p99": _percentile(latencies, 99) * 1000 if latencies else None,
                "max": latencies[-1] * 1000 if latencies else None,
            },
            "retries": retries,
            "rejections": rejections,
            "series": series,
        }


def _percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
