"""TokenMetrics: one upstream's token fetches by outcome, and the seconds its token has left."""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

from prometheus_client import Counter

from app.observability.metrics import MetricFamilies

__all__ = ["TokenMetrics"]


class _Holder(Protocol):
    def seconds_left(self) -> float: ...


#: Per registry's families and service, the credentials holding tokens for it: several
#: clients of one upstream (the container's, a factory override's) each hold their own,
#: and the gauge shows the longest left, not whichever wrote last. Weak: a client that is
#: dropped without closing leaves the gauge by itself.
_holders: weakref.WeakKeyDictionary[MetricFamilies, dict[str, weakref.WeakSet[_Holder]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


class TokenMetrics:
    """An upstream's view of the token families; the label children are made once each."""

    __slots__ = ("_fetches", "families", "service")

    def __init__(self, service: str, families: MetricFamilies) -> None:
        self.service = service
        self.families = families
        self._fetches: dict[str, Counter] = {}

    def fetched(self, outcome: str) -> None:
        """Count one token fetch (its retries included) that ended in ``outcome``."""
        counter = self._fetches.get(outcome)
        if counter is None:
            counter = self._fetches[outcome] = self.families.token_fetches.labels(self.service, outcome)
        counter.inc()

    def watch(self, holder: _Holder) -> None:
        """Show ``holder``'s seconds until expiry at scrape time (its service's longest); nothing per call."""
        with _lock:
            per_service = _holders.setdefault(self.families, {})
            holders = per_service.get(self.service)
            if holders is None:
                holders = per_service[self.service] = weakref.WeakSet()
                self.families.token_expiry.labels(self.service).set_function(
                    lambda: max((h.seconds_left() for h in list(holders)), default=0.0)
                )
            holders.add(holder)

    def unwatch(self, holder: _Holder) -> None:
        """``holder`` closed: the gauge no longer counts it."""
        with _lock:
            holders = _holders.get(self.families, {}).get(self.service)
            if holders is not None:
                holders.discard(holder)
