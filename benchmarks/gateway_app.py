"""The gateway benchmark's app: the real ``create_app`` plus two routes to compare.

``python -m benchmarks.gateway_app PORT UPSTREAM`` serves it with uvicorn, one worker.

* ``/bench/framework``: the upstream called through the framework, the client injected
  by the container (``Depends(AsyncProvide[...])`` and ``@inject``), on the gateway's
  route class (``InjectedRoute``, as its own routers are; the other routes take no
  marker, so it leaves them as FastAPI builds them).
* ``/bench/raw``: the same route by hand: one module-level aiohttp session, no DI.
"""

# No `from __future__ import annotations`: @inject reads the Annotated markers.

import sys
import tempfile
from typing import Any

import aiohttp
import uvicorn
from dependency_injector.wiring import inject
from fastapi import APIRouter, Request, Response

from app.api.deps import AnalysisEngineDep
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.clients import ClientConfig
from app.containers import Container
from app.main import create_app
from app.observability.logging import configure_logging
from settings import Settings

router = APIRouter(route_class=InjectedRoute)
_session: aiohttp.ClientSession | None = None
_upstream = ""


@router.get("/bench/framework")
@inject
async def framework_route(client: AnalysisEngineDep) -> Response:
    """Through the framework's client, injected by the container."""
    return JsonBytesResponse(await client.get("small"))


@router.get("/bench/framework-nodi")
async def framework_nodi_route(request: Request) -> Response:
    """The framework's client without per-request DI: tells DI's share from the client's."""
    client = await request.app.state.container.analysis_engine.client()
    return JsonBytesResponse(await client.get("small"))


@router.get("/bench/raw")
async def raw_route() -> Response:
    """By hand: raw aiohttp, no DI, no policies."""
    global _session  # noqa: PLW0603 - the hand-written style this route stands for
    if _session is None:
        _session = aiohttp.ClientSession()
    async with _session.get(f"{_upstream}/small") as resp:
        return JsonBytesResponse(await resp.json())


def build(upstream: str, only: str | None = None) -> Any:
    """The gateway app with the bench routes, its Analysis Engine client pointed at ``upstream``.

    ``only``: the bench route of that path alone. Starlette tries routes in order and a
    miss costs (~32k instructions a route in FastAPI 0.165): a row measured with the
    others ahead of its route would pay for their misses, which the other rows do not.
    """
    global _upstream  # noqa: PLW0603
    _upstream = upstream
    container = Container()
    # The load generator keeps 64 requests in flight: the seed's 10 + 20 bulkhead would refuse some.
    config = ClientConfig(
        base_url=upstream,
        service_name="analysis-engine-service",
        timeout_seconds=10,
        bulkhead_max_concurrent=100,
        bulkhead_max_waiting=100,
    )
    container.settings.override(Settings(env="test", analysis_engine=config))
    container.wire(modules=[sys.modules[__name__]])
    app = create_app(container)
    if only is None:
        app.include_router(router)
    else:
        alone = APIRouter()
        alone.routes.extend(r for r in router.routes if getattr(r, "path", None) == only)
        if not alone.routes:
            raise ValueError(f"no bench route {only!r}")
        app.include_router(alone)
    return app


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2]
    # The production defaults: the JSON call log on (to a file), metrics on.
    configure_logging("INFO", stream=open(tempfile.mktemp(prefix="bench-gateway-"), "w"))  # noqa: S306, SIM115
    uvicorn.run(build(upstream), host="127.0.0.1", port=port, log_config=None, access_log=False, workers=1)
