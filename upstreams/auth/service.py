"""The token service as an ASGI app, and its settings (``AUTH_*``)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from upstreams.auth.api import TOKEN_PATH, oauth_router
from upstreams.auth.grant import ClientSpec
from upstreams.auth.keys import Signer
from upstreams.auth.stats import TokenStats, stats_router
from upstreams.common import ServiceSettings, build_app

__all__ = [
    "AuthSettings",
    "TITLE",
    "create_app",
]

TITLE = "auth"

log = logging.getLogger(__name__)


class AuthSettings(ServiceSettings):
    """``AUTH_HOST``, ``AUTH_PORT`` (8003), ``AUTH_CLIENTS``, ``AUTH_TOKEN_TTL_SECONDS``, ``AUTH_ISSUER``.

    ``AUTH_CLIENTS`` is JSON: ``{"gateway": {"secret": "...", "audiences": ["analysis-engine"]}}``,
    with an optional ``"scopes"`` list per client. ``AUTH_CHAOS_ENABLED`` switches both
    the chaos routes and ``/oauth/stats`` (on in the local and test profiles).
    """

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", hide_input_in_errors=True)

    port: int = Field(default=8003, ge=1, le=65535)
    clients: dict[str, ClientSpec] = Field(default_factory=dict)
    token_ttl_seconds: int = Field(default=300, ge=1, le=86_400)
    #: The tokens' ``iss``; by default this service's own URL, ``http://<host>:<port>``.
    issuer: str | None = None

    @property
    def issuer_url(self) -> str:
        """The ``iss`` of every token."""
        return self.issuer or f"http://{self.host}:{self.port}"


def create_app(
    settings: AuthSettings | None = None, tracer_provider: Any = None, signer: Signer | None = None
) -> Any:
    """The service with a fresh signing key (or ``signer``); chaos and stats when its settings allow."""
    settings = settings or AuthSettings()
    signer = signer or Signer()
    stats = TokenStats()
    router = oauth_router(
        realm=TITLE,
        issuer=settings.issuer_url,
        ttl_seconds=settings.token_ttl_seconds,
        clients=settings.clients,
        signer=signer,
        stats=stats,
    )
    log.info(
        "token service: key %s, %d clients, tokens for %d s",
        signer.kid,
        len(settings.clients),
        settings.token_ttl_seconds,
    )
    return build_app(
        TITLE,
        settings,
        [router],
        tracer_provider,
        prefix="",
        chaos_paths=(TOKEN_PATH,),
        test_routers=[stats_router(stats)],
    )
