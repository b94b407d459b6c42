"""The gateway's settings: one section per upstream, from env vars and the profile file."""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yarl import URL

from app.clients.config import ClientConfig

__all__ = ["FLAT_ALIASES", "Settings", "UPSTREAMS"]

Profile = Literal["local", "test", "production"]

#: The upstream sections, by attribute name.
UPSTREAMS = ("analysis_engine", "ml_workbench")

#: The seed's flat variables, accepted as aliases: suffix -> ClientConfig field.
FLAT_ALIASES = {
    "API_URL": "base_url",
    "TIMEOUT": "timeout_seconds",
    "MAX_RETRIES": "max_retries",
    "API_KEY": "api_key",
}

_PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "replace",
    "todo",
    "xxx",
    "dummy",
    "example",
    "dev-",
    "test-",
)


def _is_placeholder(secret: str) -> bool:
    low = secret.strip().lower()
    return not low or low.startswith("<") or any(p in low for p in _PLACEHOLDERS)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FlatAliasSource(PydanticBaseSettingsSource):
    """Reads ``ANALYSIS_ENGINE_API_URL`` and friends into the nested sections."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` builds the whole nested mapping at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The sections found in the process environment."""
        out: dict[str, Any] = {}
        for section in UPSTREAMS:
            prefix = section.upper() + "_"
            values = {
                field: os.environ[prefix + suffix]
                for suffix, field in FLAT_ALIASES.items()
                if prefix + suffix in os.environ
            }
            if values:
                out[section] = values
        return out


class Settings(BaseSettings):
    """Everything the gateway reads at start-up. ``APP_ENV`` picks the profile file.

    Precedence, highest first: constructor arguments, ``APP_*`` variables, the seed's
    flat aliases, the profile file, the defaults.
    """

    model_config = SettingsConfigDict(
        env_prefix="APP_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        extra="ignore",
        hide_input_in_errors=True,
    )

    env: Profile = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    #: Production refuses plain http to a non-loopback host unless this is set.
    allow_insecure_http: bool = False
    #: Where spans go: nowhere, the console, or OTLP/HTTP at ``otlp_endpoint``.
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None
    #: The ML Workbench model the gateway's signals ask.
    signal_model_id: str = "direction-logreg-v1"

    analysis_engine: ClientConfig = ClientConfig(
        base_url="http://127.0.0.1:8001/api/v1",
        service_name="analysis-engine-service",
        timeout_seconds=5.0,
        total_timeout_seconds=10.0,
    )
    ml_workbench: ClientConfig = ClientConfig(
        base_url="http://127.0.0.1:8002/api/v1",
        service_name="ml-workbench-service",
        timeout_seconds=3.0,
        total_timeout_seconds=5.0,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Put the seed's flat aliases between the real ``APP_*`` variables and the file."""
        return (
            init_settings,
            env_settings,
            FlatAliasSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        if self.env != "production":
            return self
        for section in UPSTREAMS:
            cfg: ClientConfig = getattr(self, section)
            env_name = f"APP_{section.upper()}__API_KEY"
            if cfg.api_key is not None and _is_placeholder(cfg.api_key.get_secret_value()):
                raise ValueError(
                    f"{section}.api_key ({env_name}) is a placeholder; "
                    "production refuses to start without a real secret"
                )
            url = URL(cfg.base_url)
            if url.scheme == "http" and not _is_loopback(url.host or "") and not self.allow_insecure_http:
                raise ValueError(
                    f"{section}.base_url (APP_{section.upper()}__BASE_URL) is plain http to "
                    f"{url.host}; use https or set APP_ALLOW_INSECURE_HTTP=true"
                )
        return self
