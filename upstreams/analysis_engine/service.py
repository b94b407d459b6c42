"""The Analysis Engine as an ASGI app, and its settings (``AE_*``)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import SettingsConfigDict

from upstreams.analysis_engine.api import router
from upstreams.common import UpstreamSettings, build_service

__all__ = ["AnalysisEngineSettings", "TITLE", "create_app"]

TITLE = "analysis-engine"


class AnalysisEngineSettings(UpstreamSettings):
    """``AE_HOST``, ``AE_PORT`` (8001), ``AE_API_KEY``, ``AE_CHAOS_ENABLED``, ``AE_LOG_LEVEL``.

    Bearer JWTs instead of the key: ``AE_JWKS_URL`` and ``AE_AUDIENCE`` (``AE_ISSUER``
    optional); see UpstreamSettings.
    """

    model_config = SettingsConfigDict(env_prefix="AE_", extra="ignore", hide_input_in_errors=True)

    port: int = 8001


def create_app(settings: AnalysisEngineSettings | None = None, tracer_provider: Any = None) -> Any:
    """The service, chaos included when its settings allow."""
    return build_service(TITLE, settings or AnalysisEngineSettings(), [router], tracer_provider)
