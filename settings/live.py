"""Which settings change while the gateway runs, and what a new snapshot changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel

from settings.config import Settings
from settings.loader import env_names

__all__ = ["LIVE_FIELDS", "RESTART_FIELDS", "changed_fields", "restart_needed"]

#: Read once at start-up: the listening socket, the log format, the tracer, the routes
#: served, the shutdown grace the server was given, the admin routes and their token, the
#: Redis connection, and how reloads are triggered. A reload that changes one is refused,
#: naming it.
RESTART_FIELDS: Final = (
    "admin_enabled",
    "admin_token",
    "env",
    "host",
    "live_config",
    "log_json",
    "otlp_endpoint",
    "port",
    "redis_url",
    "routers",
    "shared_state",
    "shutdown_grace_seconds",
    "tracing_exporter",
)
#: Applied in place: the log level by the store itself, the rest by whoever subscribed
#: (each upstream's policies, readiness, the signal route). ``allow_insecure_http`` only
#: decides what validates.
LIVE_FIELDS: Final = (
    "allow_insecure_http",
    "essential_dependencies",
    "log_level",
    "signal_model_id",
    "upstreams",
)


def restart_needed(old: Settings, new: Settings, fields: Iterable[str] = RESTART_FIELDS) -> list[str]:
    """Each of ``fields`` that differs, as ``port (APP_PORT)``; empty when none does."""
    return [f"{name} ({env_names((name,))})" for name in fields if getattr(old, name) != getattr(new, name)]


def changed_fields(old: Settings, new: Settings) -> list[str]:
    """The dotted names of every field that differs (``upstreams.pricing.timeout_seconds``), never values."""
    return _diff(old, new, "")


def _diff(old: object, new: object, prefix: str) -> list[str]:
    if old == new:
        return []
    if isinstance(old, BaseModel) and type(old) is type(new):
        return [
            found
            for name in type(old).model_fields
            for found in _diff(getattr(old, name), getattr(new, name), f"{prefix}{name}.")
        ]
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            found
            for key in [*old, *(k for k in new if k not in old)]
            for found in _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [prefix.removesuffix(".")]
