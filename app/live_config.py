"""The live config store wired to the running gateway: each reload reaches every upstream in place."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from app.state import SharedState
from app.upstream_registry import UpstreamRegistry
from settings import ConfigStore, install_reload_signal, remove_reload_signal

__all__ = ["live_config_resource", "replica_versions"]


def _about(store: ConfigStore) -> str:
    """What this replica tells the others of its settings: the version and the settings' digest."""
    current = store.current
    return json.dumps({"version": current.version, "digest": current.settings_digest})


def replica_versions(store: ConfigStore, shared: SharedState | None) -> dict[str, Any]:
    """Each replica's settings version and digest, by replica id (this one alone without shared state).

    The version counts this replica's reloads; the digest is what to compare across the
    fleet: replicas with the same digest (and environment) run the same settings.
    """
    if shared is None:
        return {"this": json.loads(_about(store))}
    seen = {replica: _parsed(text) for replica, text in shared.replicas_about().items()}
    seen[shared.replica_id] = json.loads(_about(store))  # its own, current even between heartbeats
    return dict(sorted(seen.items()))


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # a replica of an older build, or one that says nothing
        return None


async def live_config_resource(
    store: ConfigStore, registry: UpstreamRegistry, shared: SharedState | None
) -> AsyncIterator[ConfigStore]:
    """Reload into the running upstreams for the lifespan: checked whole, then applied in place.

    ``live_config`` says what triggers a reload: ``watch`` (the config file changing, and
    SIGHUP), ``signal`` (SIGHUP only), ``off`` (nothing; ``store.reload`` still works).
    With shared state on, each replica's heartbeat carries its version and digest.
    """
    # The shutdown grace follows too: GatewayServer reads the settings in force at SIGTERM.
    unsubscribers = [store.subscribe(registry.reconfigure_problems, registry.reconfigure, name="upstreams")]
    if shared is not None:
        shared.describe = lambda: _about(store)
    mode = store.settings.live_config
    if mode == "watch":
        store.start()
    on_signal = mode != "off" and install_reload_signal(store)
    try:
        yield store
    finally:
        if on_signal:
            remove_reload_signal()
        for unsubscribe in unsubscribers:
            unsubscribe()
        await store.aclose()
