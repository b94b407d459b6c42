"""The ML Workbench as an ASGI app, and its settings (``MLW_*``)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import SettingsConfigDict

from upstreams.common import UpstreamSettings, build_service
from upstreams.ml_workbench.api import router

__all__ = ["MLWorkbenchSettings", "TITLE", "create_app"]

TITLE = "ml-workbench"


class MLWorkbenchSettings(UpstreamSettings):
    """Settings from ``MLW_HOST``, ``MLW_PORT``, ``MLW_API_KEY``, ``MLW_CHAOS_ENABLED`` and so on.

    Every one optional; the port defaults to 8002. Bearer JWTs instead of the key:
    ``MLW_JWKS_URL`` and ``MLW_AUDIENCE`` (``MLW_ISSUER`` optional); see UpstreamSettings.
    """

    model_config = SettingsConfigDict(env_prefix="MLW_", extra="ignore", hide_input_in_errors=True)

    port: int = 8002


def create_app(settings: MLWorkbenchSettings | None = None, tracer_provider: Any = None) -> Any:
    """The service, chaos included when its settings allow."""
    return build_service(TITLE, settings or MLWorkbenchSettings(), [router], tracer_provider)
