"""Prometheus families of the live config store: reloads by result, and the version in force."""

from __future__ import annotations

import threading
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

__all__ = ["ConfigFamilies", "config_families"]


class ConfigFamilies:
    """The config families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "config_reloads",
            "Settings reloads, by result (applied, unchanged, invalid, refused, failed)",
            ["result"],
            registry=registry,
        )
        # Per process and from 1 at start: replicas on one file can differ in number, so
        # compare a fleet's versions over time, not across replicas.
        self.version = Gauge(
            "service_client_config_version",
            "Version of the settings snapshot in force (1 at start, +1 per applied reload)",
            registry=registry,
        )
        # The same settings give the same digest on every replica: a rollout is done when
        # one digest is left.
        self.info = Gauge(
            "service_client_config_info",
            "1 for the settings in force, labelled with the first 12 hex digits of their redacted digest",
            ["digest"],
            registry=registry,
        )


# Keyed by the registry itself, weakly: an id() could be reused by a later registry
# (tests make many), which would then miss its families.
_families: WeakKeyDictionary[CollectorRegistry, ConfigFamilies] = WeakKeyDictionary()
_lock = threading.Lock()


def config_families(registry: CollectorRegistry = REGISTRY) -> ConfigFamilies:
    """The families on ``registry``, created on first use (one set per registry)."""
    with _lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = ConfigFamilies(registry)
        return families
