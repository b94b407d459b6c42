"""The gateway's settings: one section per upstream, from env vars and the profile file."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yarl import URL

from app.clients.config import ClientConfig

__all__ = ["FLAT_ALIASES", "Settings", "UPSTREAMS", "longest_call_seconds"]

Profile = Literal["local", "test", "production"]
Upstream = Literal["analysis_engine", "ml_workbench"]

#: The upstream sections, by attribute name.
UPSTREAMS: tuple[Upstream, ...] = ("analysis_engine", "ml_workbench")

#: Added to the longest request for the default shutdown grace: the answer still has
#: to be written after the last upstream call ends.
GRACE_MARGIN_SECONDS = 1.0
#: An admin token: at least 16 visible ASCII characters, usable as a bearer token as is.
_ADMIN_TOKEN = re.compile(r"[\x21-\x7e]{16,}")

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


def longest_call_seconds(config: ClientConfig) -> float:
    """The longest one call to this upstream can run once sent: its configured deadline.

    ``total_timeout_seconds`` when set; otherwise every attempt at its full timeout plus
    the longest wait before each retry (a Retry-After is capped at ``retry_max_delay``).
    """
    if config.total_timeout_seconds is not None:
        return config.total_timeout_seconds
    retries = config.max_retries
    return (retries + 1) * config.timeout_seconds + retries * config.retry_max_delay


def _upstream_base(url: str, service_name: str) -> ClientConfig:
    # The seed's central configuration: 30 s per attempt (its ANALYSIS_ENGINE_TIMEOUT and
    # ML_WORKBENCH_TIMEOUT default to "30.0"); the profiles set the rest. The bulkhead is
    # the gateway's, not the seed's 10 + 20: each signal sends two Analysis Engine calls,
    # so 10 slots would shed load at 5 concurrent signals.
    return ClientConfig(
        base_url=url,
        service_name=service_name,
        timeout_seconds=30.0,
        bulkhead_max_concurrent=100,
        bulkhead_max_waiting=100,
    )


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
        # "null" unsets an optional value a profile set, e.g. a call deadline.
        env_parse_none_str="null",
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

    #: The upstreams the gateway cannot answer without: while one of their breakers is
    #: open, ``/health/ready`` is 503. The others are degradable: shown as degraded, 200.
    #: ``APP_ESSENTIAL_DEPENDENCIES``: section names, comma-separated or a JSON list.
    essential_dependencies: Annotated[frozenset[Upstream], NoDecode] = frozenset({"analysis_engine"})

    #: After SIGTERM, how long in-flight requests may run before the upstream clients are
    #: closed under them. None: the longest request the upstream deadlines allow, plus 1 s.
    shutdown_grace_seconds: float | None = Field(default=None, gt=0, le=3600)

    #: ``POST /api/v1/resilience/{service}/reset|isolate``. On in the local and test
    #: profiles; production serves them only with ``admin_token`` set.
    admin_enabled: bool = False
    #: When set, the admin endpoints require it as a bearer token (in every profile).
    admin_token: SecretStr | None = None

    analysis_engine: ClientConfig = _upstream_base("http://127.0.0.1:8001/api/v1", "analysis-engine-service")
    ml_workbench: ClientConfig = _upstream_base("http://127.0.0.1:8002/api/v1", "ml-workbench-service")

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

    @field_validator("essential_dependencies", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        # From the environment: "analysis_engine,ml_workbench", a JSON list, or "" for none.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("admin_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _ADMIN_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be at least 16 visible ASCII characters, no spaces")
        return value

    @property
    def longest_request_seconds(self) -> float:
        """The longest a gateway request can take by the upstreams' deadlines.

        A signal calls the Analysis Engine (its two calls run side by side), then the ML
        Workbench: the worst case is one full call to each, one after the other.
        """
        return sum(longest_call_seconds(getattr(self, section)) for section in UPSTREAMS)

    @property
    def grace_seconds(self) -> float:
        """The shutdown grace in force: the configured one, or the longest request plus 1 s."""
        if self.shutdown_grace_seconds is not None:
            return self.shutdown_grace_seconds
        return self.longest_request_seconds + GRACE_MARGIN_SECONDS

    @property
    def admin_active(self) -> bool:
        """True when the admin endpoints are served."""
        return self.admin_token is not None or (self.admin_enabled and self.env != "production")

    def is_essential(self, section: str) -> bool:
        """True when the gateway cannot answer without the upstream ``section``."""
        return section in self.essential_dependencies

    @model_validator(mode="after")
    def _grace_covers_requests(self) -> Settings:
        grace, longest = self.shutdown_grace_seconds, self.longest_request_seconds
        if grace is not None and grace < longest:
            raise ValueError(
                f"shutdown_grace_seconds (APP_SHUTDOWN_GRACE_SECONDS) is {grace:g} s, shorter than "
                f"the longest request the upstream deadlines allow ({longest:g} s); raise it, "
                "or lower the upstreams' total_timeout_seconds"
            )
        return self

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        if self.env != "production":
            return self
        if self.admin_token is not None and _is_placeholder(self.admin_token.get_secret_value()):
            raise ValueError(
                "admin_token (APP_ADMIN_TOKEN) is a placeholder; "
                "production refuses to start without a real secret"
            )
        if self.admin_enabled and self.admin_token is None:
            raise ValueError(
                "admin_enabled (APP_ADMIN_ENABLED): production serves the admin endpoints only "
                "with a token; set APP_ADMIN_TOKEN"
            )
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
