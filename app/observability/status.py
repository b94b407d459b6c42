"""DependencyView: one dependency's live resilience status, for readiness, the API and the dashboard."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from app.observability.observer import CallObserver
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead

__all__ = ["DependencyView"]


class DependencyView:
    """Reads a client's policies and rolling stats; holds no state of its own.

    ``essential``: the service cannot answer without this dependency, so readiness
    fails while it is unavailable; a degradable one only shows as degraded. ``fleet``
    reads the upstream's instances when it has several (None otherwise).
    """

    def __init__(
        self,
        name: str,
        breaker: CircuitBreakerPolicy,
        bulkhead: Bulkhead,
        observer: CallObserver,
        *,
        budget: RetryBudget | None = None,
        adaptive: Gradient2Limit | None = None,
        essential: bool = True,
        fleet: Callable[[], dict[str, Any] | None] | None = None,
        shared: Callable[[], dict[str, Any] | None] | None = None,
        fleet_command: Callable[[str], Awaitable[None]] | None = None,
        cache: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.name = name
        self.essential = essential
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.observer = observer
        self.budget = budget
        self.adaptive = adaptive
        self.fleet = fleet
        self.shared = shared
        self.cache = cache
        #: ``await fleet_command("reset"|"isolate")`` acts on every replica's breaker, when shared.
        self.fleet_command = fleet_command

    @property
    def breaker_open(self) -> bool:
        """True while the breaker rejects calls."""
        return self.breaker.state_name == "open"

    @property
    def readiness_status(self) -> str:
        """``ok``; or, while the breaker is open, ``unavailable`` if essential, else ``degraded``."""
        if not self.breaker_open:
            return "ok"
        return "unavailable" if self.essential else "degraded"

    def readiness(self) -> dict[str, Any]:
        """The short form ``/health/ready`` shows."""
        remaining = self.breaker.seconds_until_half_open()
        return {
            "status": self.readiness_status,
            "essential": self.essential,
            "breaker": self.breaker.state_name,
            "seconds_until_half_open": None if math.isinf(remaining) else round(remaining, 3),
            "bulkhead": {
                "in_flight": self.bulkhead.in_flight,
                "queued": self.bulkhead.queued,
                "limit": self.bulkhead.max_concurrent,
            },
        }

    def status(self) -> dict[str, Any]:
        """Everything the status API and the dashboard show, over the rolling window."""
        remaining = self.breaker.seconds_until_half_open()
        out = self.observer.stats.snapshot()
        out["essential"] = self.essential
        out["breaker"] = {
            "state": self.breaker.state_name,
            "mode": self.breaker.mode,
            "isolated": self.breaker.isolated,
            "seconds_until_half_open": None if math.isinf(remaining) else round(remaining, 3),
        }
        out["bulkhead"] = {
            "in_flight": self.bulkhead.in_flight,
            "queued": self.bulkhead.queued,
            "limit": self.bulkhead.max_concurrent,
            "mode": "adaptive" if self.adaptive is not None else "fixed",
            "rejections": self.bulkhead.rejections,
        }
        out["retry_budget"] = (
            None
            if self.budget is None
            else {"balance": round(self.budget.balance, 2), "exhausted": self.budget.exhausted}
        )
        # The upstream's instances (state, EWMA, share of traffic), when it has several.
        out["instances"] = None if self.fleet is None else self.fleet()
        # Its global rate limit's shared state (Redis, degraded or not), when it has one.
        out["shared_state"] = None if self.shared is None else self.shared()
        # Its response cache (hits, misses, stale answers, the store), when it has one.
        out["cache"] = None if self.cache is None else self.cache()
        return out
