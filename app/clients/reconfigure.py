"""reconfigure_problems: the changes of a ClientConfig that a running client cannot take in place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from app.clients.config import ClientConfig

__all__ = ["NOT_LIVE", "check_live", "reconfigure_problems"]

#: Fields that never change while a client runs, and why. Everything else does (see
#: ``BaseServiceClient.reconfigure``), with the conditional cases of ``reconfigure_problems``.
NOT_LIVE: Mapping[str, str] = MappingProxyType(
    {
        "service_name": "it names the client's metrics, logs, traces and shared keys",
        "enable_metrics": "the client's metric series are made when it starts",
        # A policy switched on or off would appear or vanish under those holding it (the
        # status view, the fleet's budget sync); its numbers change live.
        "retry_budget_enabled": "a policy is switched on or off at start (its settings change live)",
        "hedging_enabled": "a policy is switched on or off at start (its settings change live)",
        "bulkhead_mode": "a fixed or adaptive bulkhead is chosen at start (its sizes change live)",
        "circuit_breaker_shared": "the breaker's coordination over the replicas is set up at start",
        "retry_budget_scope": "a budget's scope (this process, or the replicas') is set up at start",
        "rate_limit_scope": "a limit's scope (this process, or the replicas') is set up at start",
        "cache_enabled": "the response cache is switched on or off at start",
        "cache_store": "the response cache's store (memory or Redis) is opened at start",
        "cache_max_bytes": "the response cache's store is sized when it opens",
    }
)

_ON_OFF = "the rate limit is switched on or off at start (its rate, burst and mode change live)"
_ONE_OR_MANY = "going between one instance and several changes the client's transport"
_BASE_URL = "a client of one instance keeps its connections to it (give instances to move live)"
_TRANSPORT = "a client's transports (aiohttp or lean) are built at start"
_TOKENS = (
    "OAuth2 client credentials hold a token cache made at start (an API key or bearer token changes live)"
)


def reconfigure_problems(
    old: ClientConfig,
    new: ClientConfig,
    upstream: str | None = None,
    *,
    env_name: Callable[[str], str] | None = None,
) -> list[str]:
    """Why a client running on ``old`` cannot take ``new`` in place: one line per field; [] when it can.

    Each line names the field and its variable, ``APP_UPSTREAMS__<UPSTREAM>__<FIELD>``
    (``<NAME>`` without ``upstream``), or what ``env_name(field)`` says. Pure: nothing is
    built, opened or changed.
    """
    if env_name is None:
        prefix = f"APP_UPSTREAMS__{upstream.upper() if upstream else '<NAME>'}__"

        def env_name(field: str) -> str:
            return prefix + field.upper()

    changed = {field: why for field, why in NOT_LIVE.items() if getattr(old, field) != getattr(new, field)}
    if (old.rate_limit_per_second is None) != (new.rate_limit_per_second is None):
        changed["rate_limit_per_second"] = _ON_OFF
    if old.fleet != new.fleet:
        changed |= {f: _ONE_OR_MANY for f in ("instances", "discovery") if getattr(old, f) != getattr(new, f)}
    elif not new.fleet and old.base_url != new.base_url:
        changed["base_url"] = _BASE_URL
    if old.transport != new.transport:
        changed["transport"] = _TRANSPORT
    if old.auth != new.auth and "oauth2_client_credentials" in (_kind(old), _kind(new)):
        changed["auth"] = _TOKENS
    return [
        f"{field} ({env_name(field)}) cannot change without a restart: {why}"
        for field, why in changed.items()
    ]


def _kind(config: ClientConfig) -> str | None:
    return None if config.auth is None else config.auth.type


def check_live(old: ClientConfig, new: ClientConfig) -> None:
    """``ValueError`` naming each problem when a client running on ``old`` cannot take ``new`` in place."""
    problems = reconfigure_problems(old, new)
    if problems:
        raise ValueError(f"cannot reconfigure {old.service_name} live: " + "; ".join(problems))
