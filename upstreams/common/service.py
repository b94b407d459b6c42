"""Builds and serves one reference upstream: settings, auth, health, chaos and deadlines."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from starlette.types import ASGIApp

from upstreams.common.chaos import ChaosMiddleware, ChaosState, chaos_router
from upstreams.common.deadline import DeadlineMiddleware
from upstreams.common.errors import UpstreamError, install_error_handlers
from upstreams.common.jwt_auth import JwtVerifier, bearer_guard, revocation_router

__all__ = [
    "ServiceSettings",
    "UpstreamSettings",
    "build_app",
    "build_service",
    "run",
    "serve",
    "tracer_provider",
]

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    """What every reference service reads; each sets its own env prefix (``AE_``, ``MLW_``, ``AUTH_``)."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    app_env: Literal["local", "test", "production"] = Field(
        default="local", validation_alias=AliasChoices("APP_ENV", "app_env")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    #: Fault injection; by default on in the local and test profiles, off in production.
    chaos_enabled: bool | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Where SERVER spans go: nowhere, the console, or OTLP/HTTP at ``otlp_endpoint``.
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None

    @property
    def chaos(self) -> bool:
        """Whether the chaos routes and middleware are on."""
        return self.chaos_enabled if self.chaos_enabled is not None else self.app_env != "production"


class UpstreamSettings(ServiceSettings):
    """One upstream's settings: the service's, and the credential its API calls need.

    With ``jwks_url`` and ``audience`` set, every API call needs a bearer JWT for that
    audience, signed by a key of that JWKS; this wins over ``api_key`` when both are
    set. With only ``api_key``, the call needs it in X-API-Key. With neither, no
    credential. ``/health`` and ``/api/v1/chaos`` never need one.
    """

    #: When set (and no JWKS), every API call must carry it in X-API-Key.
    api_key: SecretStr | None = None
    #: The token service's key set; with ``audience``, switches bearer JWTs on.
    jwks_url: str | None = None
    #: The ``aud`` a token must name: this service's name at the token service.
    audience: str | None = None
    #: When set, a token's ``iss`` must be this.
    issuer: str | None = None
    jwt_leeway_seconds: float = Field(default=5.0, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=300.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _jwt_settings_go_together(self) -> Self:
        if (self.jwks_url is None) != (self.audience is None):
            raise ValueError("jwks_url and audience go together: set both or neither")
        if self.jwks_url is not None:
            url = urlsplit(self.jwks_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("jwks_url must be an http(s) URL")
            if self.app_env == "production" and url.scheme == "http" and not _loopback(url.hostname):
                raise ValueError("jwks_url must use https in production, unless it is on loopback")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_key(settings: UpstreamSettings) -> Any:
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(given, expected):
            raise UpstreamError(401, "missing or invalid API key", "unauthorized")

    return check


def _guard(title: str, settings: UpstreamSettings) -> tuple[list[Any], list[APIRouter]]:
    """The API routes' credential check, and the test routes that go with it."""
    if settings.jwks_url is not None and settings.audience is not None:
        verifier = JwtVerifier(
            settings.jwks_url,
            settings.audience,
            issuer=settings.issuer,
            leeway_seconds=settings.jwt_leeway_seconds,
            cache_seconds=settings.jwks_cache_seconds,
            revocable=settings.chaos,
        )
        return [Depends(bearer_guard(verifier, title))], [revocation_router(verifier)]
    if settings.api_key is not None:
        return [Depends(_require_key(settings))], []
    return [], []


def build_service(
    title: str,
    settings: UpstreamSettings,
    routers: Iterable[APIRouter],
    tracer_provider: TracerProvider | None = None,
) -> ChaosMiddleware | FastAPI:
    """The service's ASGI app; with chaos on, wrapped by the chaos middleware (outermost).

    Its routers are served under ``/api/v1``, behind the credential its settings ask
    for (see UpstreamSettings). With a ``tracer_provider``, every request gets a SERVER
    span, joined to the caller's trace through its ``traceparent``.
    """
    dependencies, test_routers = _guard(title, settings)
    return build_app(
        title, settings, routers, tracer_provider, dependencies=dependencies, test_routers=test_routers
    )


def build_app(
    title: str,
    settings: ServiceSettings,
    routers: Iterable[APIRouter],
    tracer_provider: TracerProvider | None = None,
    *,
    prefix: str = "/api/v1",
    dependencies: Sequence[Any] = (),
    chaos_paths: tuple[str, ...] = ("/api/v1/",),
    test_routers: Iterable[APIRouter] = (),
) -> ChaosMiddleware | FastAPI:
    """A reference service: health, error shapes, deadlines, tracing, and chaos when allowed.

    ``routers`` go under ``prefix`` with ``dependencies``; ``test_routers`` (the local
    and test profiles' hooks) are served only where chaos is, and the chaos faults hit
    the paths starting with one of ``chaos_paths``.
    """
    app = FastAPI(title=title, version="1.0.0")
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": title}

    for router in routers:
        app.include_router(router, prefix=prefix, dependencies=list(dependencies))
    app.add_middleware(DeadlineMiddleware)
    if tracer_provider is not None:
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=tracer_provider)
    if not settings.chaos:
        return app
    state = ChaosState()
    app.state.chaos = state
    app.include_router(chaos_router(state))
    for router in test_routers:
        app.include_router(router)
    return ChaosMiddleware(app, state, chaos_paths)


def tracer_provider(title: str, settings: ServiceSettings) -> TracerProvider | None:
    """A provider exporting as the settings say, or None when tracing is off."""
    if settings.tracing_exporter == "none" and not settings.otlp_endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": title}))
    if settings.tracing_exporter == "otlp" or settings.otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def serve(title: str, settings_cls: type[UpstreamSettings], routers: Iterable[APIRouter]) -> int:
    """``python -m upstreams.<service>``: run until SIGINT or SIGTERM."""
    routers = list(routers)  # iterated once per build
    return run(settings_cls, lambda s: build_service(title, s, routers, tracer_provider(title, s)))


def run(settings_cls: type[S], build: Callable[[S], ASGIApp]) -> int:
    """Read ``settings_cls`` from the environment, build the app, serve it until SIGINT or SIGTERM."""
    try:
        settings = settings_cls()
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix", "")
        # A problem names its variable by the first step of its location (clients.gw.secret: AUTH_CLIENTS).
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} ({prefix}{str(e['loc'][0]).upper()}): {e['msg']}"
            if e["loc"]
            else e["msg"]
            for e in exc.errors(include_input=False)
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        # A variable that is not valid JSON (AUTH_CLIENTS); the message names it, not its value.
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        build(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0
