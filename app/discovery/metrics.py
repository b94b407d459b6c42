"""Prometheus families of discovery: updates by result, and the size of each discovered set."""

from __future__ import annotations

import threading
from typing import Final
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from app.observability.metrics import PEER

__all__ = ["DISCOVERY_RESULTS", "DiscoveryFamilies", "discovery_families"]

#: The ``result`` label of ``service_client_discovery_updates_total``.
DISCOVERY_RESULTS: Final = ("applied", "unchanged", "rejected")


class DiscoveryFamilies:
    """The discovery families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "service_client_discovery_updates",
            "Instance-set updates from discovery, by what was done with them",
            [PEER, "source", "result"],
            registry=registry,
        )
        self.instances = Gauge(
            "service_client_discovered_instances",
            "Instances in the last good discovered set",
            [PEER],
            registry=registry,
        )


# Keyed by the registry itself, weakly: an id() could be reused by a later registry
# (tests make many), which would then miss its families.
_families: WeakKeyDictionary[CollectorRegistry, DiscoveryFamilies] = WeakKeyDictionary()
_lock = threading.Lock()


def discovery_families(registry: CollectorRegistry = REGISTRY) -> DiscoveryFamilies:
    """The families on ``registry``, created on first use (one set per registry)."""
    with _lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = DiscoveryFamilies(registry)
        return families
