"""Credentials: what a client asks of its credentials on each call, and building them from the config."""

from __future__ import annotations

from typing import Protocol

from app.auth.config import AuthConfig, OAuth2ClientCredentialsAuth
from app.auth.metrics import TokenMetrics
from app.auth.oauth2 import OAuth2ClientCredentials
from app.auth.static import StaticCredentials, static_credentials
from app.observability.metrics import MetricFamilies
from app.resilience.clock import MONOTONIC, Clock

__all__ = ["Credentials", "credentials_from_config"]


class Credentials(Protocol):
    """One upstream's credentials, as a client uses them.

    A static kind (``static_value`` set) costs nothing per call: the client sends it with
    its fixed headers. Otherwise the client asks :meth:`authorization` once per call
    (before the pipeline, so waiting for a token never holds a bulkhead slot and the
    upstream's breaker never sees the token endpoint), :meth:`current` per attempt, and
    :meth:`rejected` when a 401 comes back.
    """

    @property
    def header(self) -> str:
        """The header the credential goes in."""
        ...

    @property
    def static_value(self) -> str | None:
        """The header value when it never changes; None when it must be asked for per call."""
        ...

    def current(self) -> str | None:
        """The value to send now, if one is held and valid; never waits."""
        ...

    async def authorization(self, timeout: float | None = None) -> str:
        """The value to send, waiting (at most ``timeout`` s) for a new one when none is valid."""
        ...

    def rejected(self, sent: str) -> bool:
        """A 401 came back for ``sent``: drop it if still current; True when a new one is worth a retry."""
        ...

    def close(self) -> None:
        """Release what it holds, from any thread."""
        ...

    async def aclose(self) -> None:
        """Release what it holds, and wait for what ran on this loop to end."""
        ...


def credentials_from_config(
    auth: AuthConfig,
    *,
    service_name: str,
    clock: Clock = MONOTONIC,
    families: MetricFamilies | None = None,
) -> Credentials:
    """The credentials ``auth`` describes, on ``clock``; token metrics into ``families`` (None: none)."""
    if isinstance(auth, OAuth2ClientCredentialsAuth):
        metrics = None if families is None else TokenMetrics(service_name, families)
        return OAuth2ClientCredentials(auth, service_name=service_name, clock=clock, metrics=metrics)
    static: StaticCredentials | None = static_credentials(auth)
    if static is None:  # pragma: no cover - every kind is one of the above
        raise TypeError(f"unknown credentials kind {auth.type!r}")
    return static
