"""InjectedRoute: markers resolved past FastAPI's dependency solving and @inject, everything else FastAPI's."""

# No `from __future__ import annotations`: @inject reads the Annotated markers.

import inspect
import threading
from typing import Annotated, Any, get_args

import aiohttp
import pytest
from dependency_injector import wiring
from dependency_injector.wiring import inject
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Query, Request
from fastapi import routing as fastapi_routing
from fastapi.dependencies import utils as fastapi_dependencies
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from app.api.deps import AnalysisEngineDep, LifecycleDep
from app.api.markers import AsyncProvide
from app.api.routing import InjectedRoute
from app.containers import Container
from app.main import create_app
from tests.support.asgi import serve

injected = APIRouter(route_class=InjectedRoute)
calls: list[str] = []


def record_router_dependency() -> None:
    """A router-level dependency: must still run on the fast path."""
    calls.append("router-dependency")


@injected.get("/items/{item}")
@inject
async def item_route(
    item: int,
    request: Request,
    client: AnalysisEngineDep,
    background: BackgroundTasks,
    limit: Annotated[int, Query(ge=1, le=10)] = 5,
) -> dict[str, Any]:
    """Path and query parameters, the route's own request, a background task and a marker."""
    background.add_task(calls.append, "background")
    return {"item": item, "limit": limit, "path": request.url.path, "client": id(client)}


@injected.get("/sync")
@inject
def sync_route(client: AnalysisEngineDep) -> dict[str, Any]:
    """A sync endpoint: FastAPI runs it in its threadpool, so the route keeps FastAPI's handler."""
    return {"client": id(client), "thread": threading.get_ident()}


def _marker(alias: Any) -> AsyncProvide:
    (depends,) = get_args(alias)[1:]
    marker: AsyncProvide = depends.dependency
    return marker


class Fake:
    """A stand-in client, through ``app.dependency_overrides``."""


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts FastAPI's solving of a marker, and dependency-injector's resolver per call."""
    counts = {"marker solved by FastAPI": 0, "@inject resolver": 0}
    solve = fastapi_dependencies.solve_dependencies
    resolver = wiring.DependencyResolver

    async def counting_solve(**kwargs: Any) -> Any:
        if isinstance(kwargs["dependant"].call, AsyncProvide):
            counts["marker solved by FastAPI"] += 1
        return await solve(**kwargs)

    def counting_resolver(*args: Any) -> Any:
        counts["@inject resolver"] += 1
        return resolver(*args)

    # Both: FastAPI's handler calls its own module's name, the recursion the utils module's.
    monkeypatch.setattr(fastapi_routing, "solve_dependencies", counting_solve)
    monkeypatch.setattr(fastapi_dependencies, "solve_dependencies", counting_solve)
    monkeypatch.setattr(wiring, "DependencyResolver", counting_resolver)
    return counts


async def _json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def test_a_marker_skips_fastapis_solving_and_injects_resolver(
    container: Container, http: aiohttp.ClientSession, spies: dict[str, int]
) -> None:
    """The saving itself, pinned: a version of FastAPI or dependency-injector that undoes it fails here."""
    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        opened = await container.analysis_engine.client()
        for _ in range(3):
            answer = await _json(http, f"{base}/items/7?limit=3")
            assert answer == {"item": 7, "limit": 3, "path": "/items/7", "client": id(opened)}
    assert spies == {"marker solved by FastAPI": 0, "@inject resolver": 0}


async def test_fastapis_own_routes_pay_both(
    container: Container, http: aiohttp.ClientSession, spies: dict[str, int]
) -> None:
    """The same endpoint on FastAPI's APIRoute: the spies do see what the fast path skips."""
    plain = APIRouter()
    plain.add_api_route("/plain/{item}", item_route, methods=["GET"])
    app = create_app(container, routers=[plain])
    async with serve(app) as base:
        await _json(http, f"{base}/plain/7")
    assert spies == {"marker solved by FastAPI": 1, "@inject resolver": 1}


async def test_the_rest_is_fastapis(container: Container, http: aiohttp.ClientSession) -> None:
    """Router-level dependencies, a prefix, 422s, background tasks: all as on FastAPI's route."""
    calls.clear()
    app = create_app(container)
    app.include_router(injected, prefix="/v2", dependencies=[Depends(record_router_dependency)])
    async with serve(app) as base:
        answer = await _json(http, f"{base}/v2/items/1")
        assert (answer["path"], answer["limit"]) == ("/v2/items/1", 5)
        refused = await _json(http, f"{base}/v2/items/1?limit=11", status=422)
        assert "limit" in str(refused), refused
        await _json(http, f"{base}/v2/items/not-a-number", status=422)
    # The background task runs after its answer is sent: by the end, not necessarily before the next request.
    assert sorted(calls) == ["background", "router-dependency", "router-dependency", "router-dependency"]


async def test_app_dependency_overrides_of_a_marker_are_honoured(
    container: Container, http: aiohttp.ClientSession
) -> None:
    """A request while ``app.dependency_overrides`` holds anything takes FastAPI's handler."""
    fake = Fake()
    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        opened = await container.analysis_engine.client()
        app.dependency_overrides[_marker(AnalysisEngineDep)] = lambda: fake
        assert (await _json(http, f"{base}/items/1"))["client"] == id(fake)
        # An override of some other marker: this route's marker still gets its client.
        app.dependency_overrides = {_marker(LifecycleDep): lambda: fake}
        assert (await _json(http, f"{base}/items/1"))["client"] == id(opened)
        app.dependency_overrides = {}
        assert (await _json(http, f"{base}/items/1"))["client"] == id(opened)


async def test_a_sync_endpoint_still_runs_in_the_threadpool(
    container: Container, http: aiohttp.ClientSession
) -> None:
    """No stand-in for it: a coroutine one would run the endpoint on the event loop."""
    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        answer = await _json(http, f"{base}/sync")
        assert answer["client"] == id(await container.analysis_engine.client())
        assert answer["thread"] != threading.get_ident()


async def test_a_validation_error_names_the_endpoint(
    container: Container, http: aiohttp.ClientSession
) -> None:
    """The error's context is the route's own function, not the stand-in (nor @inject's wrapper)."""
    seen: list[RequestValidationError] = []

    async def capture(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        seen.append(exc)
        return JSONResponse({}, status_code=422)

    app: FastAPI = create_app(container, routers=[injected])
    app.add_exception_handler(RequestValidationError, capture)
    async with serve(app) as base:
        await _json(http, f"{base}/items/1?limit=0", status=422)
    (error,) = seen
    assert (error.endpoint_function, error.endpoint_file) == ("item_route", __file__)
    assert error.endpoint_line == inspect.unwrap(item_route).__code__.co_firstlineno  # its first decorator's


def test_the_gateways_routers_use_it() -> None:
    """Every route of the gateway's own routers that takes a marker is an InjectedRoute."""
    from app.api.routes import admin, config, gateway, health, observability  # noqa: PLC0415

    routes = [r for m in (admin, config, gateway, health, observability) for r in m.router.routes]
    api_routes = [r for r in routes if isinstance(r, APIRoute)]
    assert api_routes, "no routes found"
    assert {type(r) for r in api_routes} == {InjectedRoute}
