"""Prometheus metrics, the live resilience status (JSON and SSE) and the dashboard page."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

import asyncio
import time
from collections.abc import AsyncIterator
from importlib.resources import files

import orjson
from dependency_injector.wiring import inject
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.api.deps import ConfigStoreDep, DependencyViewsDep, LifecycleDep
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.api.schemas import ResilienceStatus
from app.observability.status import DependencyView
from settings import ConfigStore

__all__ = ["router"]

router = APIRouter(route_class=InjectedRoute, tags=["observability"])

#: The page is one file with its script and styles inline: nothing is fetched from outside.
DASHBOARD_HTML = files("app.api").joinpath("dashboard.html").read_text(encoding="utf-8")
STREAM_INTERVAL_SECONDS = 1.0


def _status(views: list[DependencyView], store: ConfigStore) -> dict[str, object]:
    current, last = store.current, store.last_result
    config = {
        "version": current.version,
        "digest": current.settings_digest,
        "last_reload": None if last is None else last.as_dict(),
    }
    dependencies = {v.name: v.status() for v in views}
    return {"generated_at": time.time(), "config": config, "dependencies": dependencies}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text."}
    },
)
async def metrics() -> Response:
    """Prometheus exposition: the clients' metrics and the gateway's own HTTP metrics."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/resilience", response_model=ResilienceStatus)
@inject
async def resilience(views: DependencyViewsDep, store: ConfigStoreDep) -> Response:
    """Each dependency over the last 10 s (rate, errors, latency, breaker, bulkhead); the config version."""
    return JsonBytesResponse(_status(views, store))


@router.get(
    "/api/v1/resilience/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {"$ref": "#/components/schemas/ResilienceStatus"},
                            }
                        },
                    }
                }
            },
            "description": "One `data:` event a second, each the status of GET /api/v1/resilience.",
        }
    },
)
@inject
async def resilience_stream(
    request: Request, views: DependencyViewsDep, lifecycle: LifecycleDep, store: ConfigStoreDep
) -> StreamingResponse:
    """The same status as Server-Sent Events, one per second, until the client leaves.

    The stream also ends when the gateway starts draining: an open dashboard must not
    hold a shutdown for its whole grace period (the page reconnects to the next one).
    """

    async def events() -> AsyncIterator[bytes]:
        while not lifecycle.draining and not await request.is_disconnected():
            yield b"data: " + orjson.dumps(_status(views, store)) + b"\n\n"
            await asyncio.sleep(STREAM_INTERVAL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The live dashboard: one card per dependency, fed by the SSE stream."""
    return HTMLResponse(DASHBOARD_HTML)
