"""The gateway's settings: every upstream by name (``APP_UPSTREAMS__<NAME>__...``), env vars and profile."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yarl import URL

from app.clients.config import ClientConfig
from app.clients.registry import UPSTREAM_NAME, default_service_name
from app.state import SharedStateSettings
from settings.envfile import dotenv_source

__all__ = ["FLAT_ALIASES", "Settings", "SharedStateConfig", "UPSTREAMS", "env_prefix", "longest_call_seconds"]

Profile = Literal["local", "test", "production"]

#: The gateway's own upstreams. Each is an entry of ``Settings.upstreams`` like any other,
#: with the gateway's defaults below, and keeps its own variables: ``APP_ANALYSIS_ENGINE__...``
#: and the seed's flat ``ANALYSIS_ENGINE_API_URL`` (see ``FLAT_ALIASES``).
UPSTREAMS: tuple[str, ...] = ("analysis_engine", "ml_workbench")

#: Added to the longest request for the default shutdown grace: the answer still has
#: to be written after the last upstream call ends.
GRACE_MARGIN_SECONDS = 1.0
#: An admin token: at least 16 visible ASCII characters, usable as a bearer token as is.
_ADMIN_TOKEN = re.compile(r"[\x21-\x7e]{16,}")
#: Where a router of one's own is: ``package.module:attribute``, as uvicorn names an app.
_IMPORT_STRING = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

#: The seed's flat variables, accepted as aliases: suffix -> ClientConfig field.
FLAT_ALIASES = {
    "API_URL": "base_url",
    "TIMEOUT": "timeout_seconds",
    "MAX_RETRIES": "max_retries",
    "API_KEY": "api_key",
}

_PLACEHOLDERS = (
    # The local profile's secrets are in the README: never a production one.
    "local-",
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


def env_prefix(name: str) -> str:
    """The variables of the upstream ``name`` start with this, then the field in capitals.

    ``APP_UPSTREAMS__PRICING__`` for a configured one; the gateway's own keep their
    section's, ``APP_ANALYSIS_ENGINE__`` (``APP_UPSTREAMS__ANALYSIS_ENGINE__`` works too).
    """
    return f"APP_{name.upper()}__" if name in UPSTREAMS else f"APP_UPSTREAMS__{name.upper()}__"


#: What every upstream starts from before its variables and profile lines apply: the
#: ``ClientConfig`` defaults (the seed's), with a ``service_name`` made from its name.
#: The gateway's own two also get the seed's central configuration, 30 s per attempt
#: (its ANALYSIS_ENGINE_TIMEOUT and ML_WORKBENCH_TIMEOUT default to "30.0"), and the
#: gateway's bulkhead, not the seed's 10 + 20: each signal sends two Analysis Engine
#: calls, so 10 slots would shed load at 5 concurrent signals.
_GATEWAY_UPSTREAM = {"timeout_seconds": 30.0, "bulkhead_max_concurrent": 100, "bulkhead_max_waiting": 100}
_BASES: dict[str, dict[str, Any]] = {
    "analysis_engine": {"base_url": "http://127.0.0.1:8001/api/v1", **_GATEWAY_UPSTREAM},
    "ml_workbench": {"base_url": "http://127.0.0.1:8002/api/v1", **_GATEWAY_UPSTREAM},
}


def _base(name: str) -> dict[str, Any]:
    return {"service_name": default_service_name(name), **_BASES.get(name, {})}


class _Sections(BaseSettings):
    """The gateway's own upstreams under their section prefix: ``APP_ANALYSIS_ENGINE__...``.

    Only read through ``SectionSource``, with the Settings' env rules, so values are
    parsed exactly as ``APP_UPSTREAMS__...`` ones are (JSON for lists, "null" for None).
    """

    model_config = SettingsConfigDict(
        env_prefix="APP_",
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="ignore",
    )

    analysis_engine: ClientConfig | None = None
    ml_workbench: ClientConfig | None = None


class SectionSource(PydanticBaseSettingsSource):
    """Reads ``APP_ANALYSIS_ENGINE__*`` (from the environment or the profile) into ``upstreams``."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` builds the whole nested mapping at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The sections the inner source found, as entries of ``upstreams``."""
        found = self.inner()
        sections = {name: found[name] for name in UPSTREAMS if found.get(name) is not None}
        return {"upstreams": sections} if sections else {}


class FlatAliasSource(PydanticBaseSettingsSource):
    """Reads ``ANALYSIS_ENGINE_API_URL`` and friends into ``upstreams``."""

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
        return {"upstreams": out} if out else {}


class SharedStateConfig(BaseModel):
    """How replicas share state in Redis (``APP_SHARED_STATE__<FIELD>``); used only with ``redis_url``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Every Redis call on a request path ends within this, or the replica uses local state.
    deadline_seconds: float = Field(default=0.02, gt=0, le=1)
    connect_timeout_seconds: float = Field(default=0.25, gt=0, le=30)
    socket_timeout_seconds: float = Field(default=0.25, gt=0, le=30)
    health_check_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Redis's own breaker: this many failed calls in a row, then one trial after the reset time.
    breaker_failure_threshold: int = Field(default=3, ge=1, le=1000)
    breaker_reset_seconds: float = Field(default=2.0, gt=0, le=3600)
    key_prefix: str = Field(default="rc:", min_length=1, max_length=64)
    replica_lease_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: A global limit while Redis is unavailable: ``local`` (limit / replicas seen), ``open``, ``closed``.
    failure_mode: Literal["local", "open", "closed"] = "local"


class Settings(BaseSettings):
    """Everything the gateway reads at start-up. ``APP_ENV`` picks the profile file.

    ``upstreams`` holds every upstream by name: the gateway's own two, and one more for
    each ``<NAME>`` of ``APP_UPSTREAMS__<NAME>__BASE_URL`` (any ``ClientConfig`` field
    the same way, in the environment or the profile). ``settings.analysis_engine`` is
    ``settings.upstreams["analysis_engine"]``.

    Precedence, highest first: constructor arguments, ``APP_UPSTREAMS__*`` and other
    ``APP_*`` variables, ``APP_ANALYSIS_ENGINE__*`` / ``APP_ML_WORKBENCH__*`` variables,
    the seed's flat aliases, the profile file (in the same order), the defaults.
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

    #: Every upstream, by name; see the class docstring. Always holds the gateway's own two.
    upstreams: dict[str, ClientConfig] = Field(default_factory=dict, validate_default=True)

    #: The upstreams the gateway cannot answer without: while one of their breakers is
    #: open, ``/health/ready`` is 503. The others are degradable: shown as degraded, 200.
    #: ``APP_ESSENTIAL_DEPENDENCIES``: upstream names, comma-separated or a JSON list.
    essential_dependencies: Annotated[frozenset[str], NoDecode] = frozenset({"analysis_engine"})

    #: Routers of your own that ``create_app`` serves with the gateway's, so ``python -m app``
    #: runs them with no code of the framework's changed. ``APP_ROUTERS``: import strings,
    #: ``package.module:router``, comma-separated or a JSON list.
    routers: Annotated[tuple[str, ...], NoDecode] = ()

    #: After SIGTERM, how long in-flight requests may run before the upstream clients are
    #: closed under them. None: the longest request the upstream deadlines allow, plus 1 s.
    shutdown_grace_seconds: float | None = Field(default=None, gt=0, le=3600)

    #: ``POST /api/v1/resilience/{service}/reset|isolate``. On in the local and test
    #: profiles; production serves them only with ``admin_token`` set.
    admin_enabled: bool = False
    #: When set, the admin endpoints require it as a bearer token (in every profile).
    admin_token: SecretStr | None = None

    #: How the settings reload while the gateway runs: ``watch`` (when the config file
    #: changes, and on SIGHUP), ``signal`` (on SIGHUP only) or ``off``. ``APP_LIVE_CONFIG``.
    live_config: Literal["watch", "signal", "off"] = "watch"

    #: Shared state between replicas (DESIGN §9): off unless set. ``APP_REDIS_URL``,
    #: ``redis://[:password@]host:port/db``; a secret (it may hold a password).
    redis_url: SecretStr | None = None
    shared_state: SharedStateConfig = SharedStateConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the gateway's own sections' variables and the seed's flat aliases, in precedence order."""
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            SectionSource(settings_cls, EnvSettingsSource(_Sections)),
            FlatAliasSource(settings_cls),
        ]
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            # The file's lines as the loader read them once, when it pinned them (see envfile).
            sources += [
                dotenv_source(settings_cls, dotenv_settings),
                SectionSource(settings_cls, dotenv_source(_Sections, dotenv_settings)),
            ]
        else:
            sources.append(dotenv_settings)
        sources.append(file_secret_settings)
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _sections_as_upstreams(cls, data: Any) -> Any:
        # Settings(analysis_engine=config), as before the registry: that upstream's config.
        if not isinstance(data, dict) or not any(name in data for name in UPSTREAMS):
            return data
        data = dict(data)
        upstreams = dict(data.get("upstreams") or {})
        for name in UPSTREAMS:
            if name in data:
                upstreams[name] = data.pop(name)
        data["upstreams"] = upstreams
        return data

    @field_validator("upstreams", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        # Each upstream's own values over its base (see _BASES); the gateway's own two are
        # always there. Their order is fixed (the gateway's, then the others by name), as
        # readiness and the dashboard list them in it.
        if not isinstance(value, Mapping):
            return value
        given: dict[str, Any] = {}
        for key, entry in value.items():
            name = str(key).lower()
            if not UPSTREAM_NAME.fullmatch(name):
                raise ValueError(
                    f"{key!r} is not an upstream name: lower-case letters, digits and '_', from a letter"
                )
            given[name] = entry
        merged: dict[str, Any] = {}
        for name in [*UPSTREAMS, *sorted(set(given) - set(UPSTREAMS))]:
            entry = given.get(name)
            if isinstance(entry, ClientConfig):
                merged[name] = entry
            elif entry is None or isinstance(entry, Mapping):
                merged[name] = {**_base(name), **(entry or {})}
            else:
                merged[name] = entry  # not a section: the model says what is wrong with it
        return merged

    @field_validator("essential_dependencies", "routers", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        # From the environment: "analysis_engine,ml_workbench", a JSON list, or "" for none.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("routers")
    @classmethod
    def _import_strings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [spec for spec in value if not _IMPORT_STRING.fullmatch(spec)]
        if bad:
            raise ValueError(f"write each as package.module:router, not {', '.join(map(repr, bad))}")
        return value

    @field_validator("admin_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _ADMIN_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be at least 16 visible ASCII characters, no spaces")
        return value

    @property
    def analysis_engine(self) -> ClientConfig:
        """The Analysis Engine's config: ``upstreams["analysis_engine"]``."""
        return self.upstreams["analysis_engine"]

    @property
    def ml_workbench(self) -> ClientConfig:
        """The ML Workbench's config: ``upstreams["ml_workbench"]``."""
        return self.upstreams["ml_workbench"]

    def upstream(self, name: str) -> ClientConfig:
        """The config of the upstream ``name``; a ``KeyError`` names the configured ones."""
        try:
            return self.upstreams[name]
        except KeyError:
            known = ", ".join(self.upstreams)
            raise KeyError(f"no upstream {name!r} in the settings; configured: {known}") from None

    @property
    def longest_request_seconds(self) -> float:
        """The longest a gateway request can take by the upstreams' deadlines.

        A signal calls the Analysis Engine (its two calls run side by side), then the ML
        Workbench: the worst case is one full call to each, one after the other. A route
        of your own may call any other upstream too, so each configured one adds its
        longest call.
        """
        return sum(longest_call_seconds(config) for config in self.upstreams.values())

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

    def is_essential(self, name: str) -> bool:
        """True when the gateway cannot answer without the upstream ``name``."""
        return name in self.essential_dependencies

    def shared_state_settings(self) -> SharedStateSettings | None:
        """What the process's Redis client needs, or None when shared state is off (no ``redis_url``)."""
        if self.redis_url is None:
            return None
        return SharedStateSettings(url=self.redis_url.get_secret_value(), **self.shared_state.model_dump())

    @model_validator(mode="after")
    def _global_limits_need_redis(self) -> Settings:
        if self.redis_url is None:
            wanting = sorted(
                n
                for n, c in self.upstreams.items()
                if "global" in (c.rate_limit_scope, c.retry_budget_scope)
                or c.circuit_breaker_shared
                or (c.cache_enabled and c.cache_store == "redis")
            )
            if wanting:
                raise ValueError(
                    f"shared state (a global rate limit or retry budget, a shared breaker, a Redis "
                    f"response cache) for "
                    f"{', '.join(wanting)} needs APP_REDIS_URL"
                )
        return self

    @model_validator(mode="after")
    def _essential_are_upstreams(self) -> Settings:
        unknown = sorted(self.essential_dependencies - set(self.upstreams))
        if unknown:
            raise ValueError(
                f"essential_dependencies (APP_ESSENTIAL_DEPENDENCIES): no upstream named "
                f"{', '.join(map(repr, unknown))}; configured: {', '.join(self.upstreams)}"
            )
        return self

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
        for name, cfg in self.upstreams.items():
            prefix = env_prefix(name)
            if cfg.api_key is not None and _is_placeholder(cfg.api_key.get_secret_value()):
                raise ValueError(
                    f"upstreams.{name}.api_key ({prefix}API_KEY) is a placeholder; "
                    "production refuses to start without a real secret"
                )
            self._insecure_http_guard(name, "base_url", cfg.base_url)
            self._auth_guards(name, cfg)
        return self

    def _insecure_http_guard(self, name: str, field: str, value: str) -> None:
        """Production: refuse plain http to a non-loopback host for ``upstreams.<name>.<field>``."""
        url = URL(value)
        if url.scheme == "http" and not _is_loopback(url.host or "") and not self.allow_insecure_http:
            raise ValueError(
                f"upstreams.{name}.{field} ({env_prefix(name)}{field.upper().replace('.', '__')}) is plain "
                f"http to {url.host}; use https or set APP_ALLOW_INSECURE_HTTP=true"
            )

    def _auth_guards(self, name: str, cfg: ClientConfig) -> None:
        """Production: no placeholder in ``auth``'s secret, and no client secret sent over plain http."""
        auth = cfg.auth
        if auth is None:
            return
        field = auth.sensitive_field
        secret: SecretStr = getattr(auth, field)
        if _is_placeholder(secret.get_secret_value()):
            raise ValueError(
                f"upstreams.{name}.auth.{field} ({env_prefix(name)}AUTH__{field.upper()}) is a placeholder; "
                "production refuses to start without a real secret"
            )
        if auth.type == "oauth2_client_credentials":
            self._insecure_http_guard(name, "auth.token_url", auth.token_url)
