"""InstanceEvents: an upstream's instances in metrics and logs, with a cap on instance labels."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Collection
from typing import Protocol

from prometheus_client import Counter

from app.observability.metrics import PEER, MetricFamilies

__all__ = ["INSTANCE_LABEL_LIMIT", "InstanceEvents", "InstanceLike"]

logger = logging.getLogger("app.clients")

#: Distinct ``instance`` label values per upstream. A discovery source that churns through
#: addresses (autoscaling, DNS rotation) would otherwise grow the series without bound;
#: instances past the cap are counted under ``other`` and get no EWMA series.
INSTANCE_LABEL_LIMIT = 32
OTHER = "other"
STATES = ("healthy", "ejected", "draining")


class InstanceLike(Protocol):
    """What these events read of an instance."""

    @property
    def address(self) -> str:
        """``host:port``."""
        ...


class InstanceEvents:
    """Counts each instance's attempts and ejections, keeps its EWMA gauge, logs ejections.

    ``families`` None: logs only (metrics off). ``ewma_of`` reads an instance's current
    EWMA in seconds; ``states`` counts instances by state; both are read at scrape time.
    """

    def __init__(
        self,
        service: str,
        families: MetricFamilies | None,
        *,
        ewma_of: Callable[[InstanceLike], float],
        states: Callable[[], dict[str, int]],
        limit: int = INSTANCE_LABEL_LIMIT,
    ) -> None:
        self.service = service
        self.families = families
        self._ewma_of = ewma_of
        self._limit = limit
        self._labels: dict[str, str] = {}
        self._attempts: dict[tuple[str, str], Counter] = {}
        self._reasons: dict[str, set[str]] = {}
        if families is not None:
            for state in STATES:
                child = families.instances.labels(service, state)
                child.set_function(functools.partial(_count, states, state))

    def _label(self, address: str) -> str:
        label = self._labels.get(address)
        if label is None:
            label = address if len(self._labels) < self._limit else OTHER
            self._labels[address] = label
        return label

    def attempt_ended(self, instance: InstanceLike, outcome: str) -> None:
        """An attempt on ``instance`` ended with ``outcome``."""
        if self.families is None:
            return
        key = (instance.address, outcome)
        counter = self._attempts.get(key)
        if counter is None:
            label = self._label(instance.address)
            family = self.families.instance_attempts
            counter = self._attempts[key] = family.labels(self.service, label, outcome)
        counter.inc()

    def ejected(self, instance: InstanceLike, reason: str, seconds: float) -> None:
        """``instance`` was ejected for ``seconds``: counted and logged."""
        if self.families is not None:
            self._reasons.setdefault(instance.address, set()).add(reason)
            self.families.instance_ejections.labels(self.service, self._label(instance.address), reason).inc()
        fields = {
            PEER.replace("_", "."): self.service,
            "event": "instance_ejected",
            "server.address": instance.address,
            "reason": reason,
            "seconds": round(seconds, 3),
        }
        logger.warning(
            "instance %s of %s ejected for %.1fs (%s)",
            instance.address,
            self.service,
            seconds,
            reason,
            extra={"fields": fields},
        )

    def instances_changed(self, instances: Collection[InstanceLike]) -> None:
        """The set changed: EWMA series for new instances, none for those gone."""
        if self.families is None:
            return
        gauge = self.families.instance_ewma
        current = {i.address: i for i in instances}
        for address, instance in current.items():
            label = self._label(address)
            if label != OTHER:
                gauge.labels(self.service, label).set_function(functools.partial(self._ewma_of, instance))
        for address, label in list(self._labels.items()):
            if address not in current:
                self._forget(self.families, address, label)

    def _forget(self, families: MetricFamilies, address: str, label: str) -> None:
        """An instance gone from the set: its series go and its label slot frees for the next one.

        Without this, the first 32 addresses ever seen would hold the slots for good, and
        after a few rolling deploys every live instance would be counted as ``other``.
        """
        del self._labels[address]
        for key in [k for k in self._attempts if k[0] == address]:
            del self._attempts[key]
            if label != OTHER:
                with contextlib.suppress(KeyError):
                    families.instance_attempts.remove(self.service, label, key[1])
        for reason in self._reasons.pop(address, ()):
            if label != OTHER:
                with contextlib.suppress(KeyError):
                    families.instance_ejections.remove(self.service, label, reason)
        if label != OTHER:
            with contextlib.suppress(KeyError):  # never had a series
                families.instance_ewma.remove(self.service, label)


def _count(states: Callable[[], dict[str, int]], state: str) -> float:
    return float(states().get(state, 0))
