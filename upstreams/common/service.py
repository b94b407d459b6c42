"""Builds and serves one reference upstream: settings, auth, health, chaos and deadlines."""

from __future__ import annotations

import hmac
import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from upstreams.common.chaos import ChaosMiddleware, ChaosState, chaos_router
from upstreams.common.deadline import DeadlineMiddleware
from upstreams.common.errors import UpstreamError, install_error_handlers

__all__ = ["UpstreamSettings", "build_service", "serve", "tracer_provider"]


class UpstreamSettings(BaseSettings):
    """One upstream's settings; each service sets its own env prefix (``AE_``, ``MLW_``)."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    app_env: Literal["local", "test", "production"] = Field(
        default="local", validation_alias=AliasChoices("APP_ENV", "app_env")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    #: When set, every API call must carry it in X-API-Key.
    api_key: SecretStr | None = None
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


def _require_key(settings: UpstreamSettings) -> Any:
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(given, expected):
            raise UpstreamError(401, "missing or invalid API key", "unauthorized")

    return check


def build_service(
    title: str,
    settings: UpstreamSettings,
    routers: Iterable[APIRouter],
    tracer_provider: TracerProvider | None = None,
) -> ChaosMiddleware | FastAPI:
    """The service's ASGI app; with chaos on, wrapped by the chaos middleware (outermost).

    With a ``tracer_provider``, every request gets a SERVER span, joined to the caller's
    trace through its ``traceparent``.
    """
    app = FastAPI(title=title, version="1.0.0")
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": title}

    auth = Depends(_require_key(settings))
    for router in routers:
        app.include_router(router, prefix="/api/v1", dependencies=[auth])
    app.add_middleware(DeadlineMiddleware)
    if tracer_provider is not None:
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=tracer_provider)
    if not settings.chaos:
        return app
    state = ChaosState()
    app.state.chaos = state
    app.include_router(chaos_router(state))
    return ChaosMiddleware(app, state)


def tracer_provider(title: str, settings: UpstreamSettings) -> TracerProvider | None:
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
    try:
        settings = settings_cls()
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} ({prefix}{'_'.join(map(str, e['loc'])).upper()}): " + e["msg"]
            for e in exc.errors(include_input=False)
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = build_service(title, settings, routers, tracer_provider(title, settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0
