"""Counter and histogram families kept in plain Python numbers and exported at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from threading import Lock, RLock
from time import time

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

__all__ = ["Cell", "PreAggregatedCounter", "PreAggregatedHistogram", "upper_bounds"]

#: One series' numbers. A counter's is ``[value]``; a histogram's is its per-bucket counts
#: (not cumulative, in the order of its upper bounds, ``+Inf`` last) followed by the sum.
Cell = list[float]

# The ``le`` label as Histogram writes it (``0.001``, ``1.0``, ``+Inf``); typed here because
# prometheus_client leaves the function unannotated.
_go_float: Callable[[float], str] = floatToGoString


def upper_bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    """The buckets' upper bounds as ``Histogram`` makes them: floats, sorted, ``+Inf`` last."""
    bounds = [float(b) for b in buckets]
    if bounds != sorted(bounds):
        raise ValueError("Buckets not in sorted order")
    if not bounds or bounds[-1] != INF:
        bounds.append(INF)
    return tuple(bounds)


def _use_created() -> bool:
    # prometheus_client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics()),
    # read at every scrape as its Counter does, so ``_created`` lines come and go exactly as
    # they would for its own families. A private name: absent, the default (emitted) applies.
    return bool(getattr(_prometheus_metrics, "_use_created", True))


class _Family:
    """A labelled family whose series are cells, registered like a prometheus_client metric."""

    _type = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry | None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # Label values -> (cell, creation time, the lock its writers hold). Insertion order is
        # the order series first appeared, which is the order prometheus_client exports them in.
        self._series: dict[tuple[str, ...], tuple[Cell, float, Lock | RLock]] = {}
        # Guards _series' shape (a new series, a scrape's copy), not the numbers. Re-entrant,
        # and nothing the gc tracks is made while it is held, for the same reason as the
        # service locks (MetricFamilies.lock): a dropped observer's __del__ may add series.
        self._mutex = RLock()
        #: Called before each scrape reads the series: lets batched writers add what they hold.
        self.before_collect: Callable[[], None] | None = None
        if registry is not None:
            registry.register(self)

    def _size(self) -> int:
        return 1

    def series(self, labelvalues: Sequence[object], lock: Lock | RLock) -> Cell:
        """The cell of one label set, made on first use (and kept: a series never disappears).

        Whoever adds to the cell holds ``lock`` while doing so; the same label set always
        comes with the same lock (see ``MetricFamilies.lock``).
        """
        key = tuple(str(v) for v in labelvalues)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(key)}")
        made: tuple[Cell, float, Lock | RLock] = ([0] * self._size(), time(), lock)  # before the mutex
        with self._mutex:
            found = self._series.setdefault(key, made)
        return found[0]

    def _snapshot(self) -> list[tuple[tuple[str, ...], tuple[Cell, float, Lock | RLock]]]:
        if self.before_collect is not None:
            self.before_collect()  # before the mutex: it may make new series
        with self._mutex:
            series = self._series.copy()
        return list(series.items())

    def describe(self) -> list[Metric]:
        """The family without samples: the registry reserves its names (and refuses duplicates)."""
        return [Metric(self.name, self.documentation, self._type)]

    def collect(self) -> Iterable[Metric]:  # pragma: no cover - every subclass defines it
        """The family with one sample set per series."""
        raise NotImplementedError


class PreAggregatedCounter(_Family):
    """A counter family: ``cell[0] += n`` under the series' lock, read at scrape time."""

    _type = "counter"

    def collect(self) -> list[Metric]:
        """``<name>_total`` (and ``<name>_created``) per series, as Counter exports them."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = _use_created()
        for labels, (cell, made, _) in self._snapshot():
            # One list item is read whole: no lock needed for a counter's single number.
            family.add_metric(labels, float(cell[0]), made if created else None)
        return [family]


class PreAggregatedHistogram(_Family):
    """A histogram family: a bucket's count and the sum are added to under the series' lock."""

    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
        *,
        buckets: Sequence[float],
    ) -> None:
        self.upper_bounds = upper_bounds(buckets)
        self._le = [_go_float(b) for b in self.upper_bounds]
        super().__init__(name, documentation, labelnames, registry)

    def _size(self) -> int:
        return len(self.upper_bounds) + 1  # the buckets, then the sum

    def collect(self) -> list[Metric]:
        """Cumulative ``_bucket``, ``_count``, ``_sum``, ``_created`` per series, as Histogram has them."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = _use_created()
        for labels, (cell, made, lock) in self._snapshot():
            with lock:  # a bucket and the sum are written together: read them together
                numbers = cell[:]
            cumulative: list[tuple[str, float]] = []
            count = 0.0
            for le, n in zip(self._le, numbers, strict=False):
                count += n
                cumulative.append((le, count))
            family.add_metric(labels, cumulative, float(numbers[-1]))
            if created:
                family.samples.append(
                    Sample(self.name + "_created", dict(zip(self.labelnames, labels, strict=True)), made)
                )
        return [family]
