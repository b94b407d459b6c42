"""TokenMetrics: one upstream's token fetches by outcome, and the seconds its token has left."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter

from app.observability.metrics import MetricFamilies

__all__ = ["TokenMetrics"]


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

    def watch(self, seconds_left: Callable[[], float]) -> None:
        """Read the seconds until the token expires at scrape time, at no cost per call."""
        self.families.token_expiry.labels(self.service).set_function(seconds_left)
