"""The shared state's metric families: degraded or not, and how Redis calls ended."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

__all__ = ["SharedStateFamilies", "shared_state_families"]


class SharedStateFamilies:
    """``service_client_shared_state_degraded`` and ``service_client_shared_state_calls_total``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.degraded = Gauge(
            "service_client_shared_state_degraded",
            "1 while Redis is unavailable and the replica runs on local state",
            registry=registry,
        )
        self.calls = Counter(
            "service_client_shared_state_calls",
            "Redis calls by result (ok, timeout, error, rejected by its breaker)",
            ["result"],
            registry=registry,
        )
        self.replicas = Gauge(
            "service_client_shared_state_replicas",
            "Replicas seen holding a live lease",
            registry=registry,
        )


_families: weakref.WeakKeyDictionary[CollectorRegistry, SharedStateFamilies] = weakref.WeakKeyDictionary()


def shared_state_families(registry: CollectorRegistry = REGISTRY) -> SharedStateFamilies:
    """The families on ``registry``, registered once."""
    families = _families.get(registry)
    if families is None:
        families = _families[registry] = SharedStateFamilies(registry)
    return families
