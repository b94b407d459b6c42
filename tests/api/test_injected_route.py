"""InjectedRoute: markers resolved past FastAPI's dependency solving and @inject, everything else FastAPI's."""

# No `from __future__ import annotations`: @inject reads the Annotated markers.

import inspect
import threading
from typing import Annotated, Any, get_args

import aiohttp
import pytest
from dependency_injector import providers, wiring
from dependency_injector.wiring import inject
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, Query, Request
from fastapi import routing as fastapi_routing
from fastapi.dependencies import utils as fastapi_dependencies
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from app.api import routing
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


class Tagged(AsyncProvide):  # type: ignore[misc] - Provide is untyped
    """A marker subclass asking FastAPI for a header of its own."""

    async def __call__(self, connection: HTTPConnection, x_tag: Annotated[str, Header()] = "none") -> Any:
        return f"{type(await super().__call__(connection)).__name__}@{x_tag}"


class Synchronous(AsyncProvide):  # type: ignore[misc] - Provide is untyped
    """A marker subclass with a sync ``__call__``: FastAPI runs it in its threadpool."""

    def __call__(self, request: Request) -> Any:  # type: ignore[override] - sync on purpose
        return f"sync:{request.url.path}"


class Bare(AsyncProvide):  # type: ignore[misc] - Provide is untyped
    """A marker subclass asking for nothing, not even the connection."""

    async def __call__(self) -> Any:  # type: ignore[override] - no connection on purpose
        return "bare"


class OwnCall(AsyncProvide):  # type: ignore[misc] - Provide is untyped
    """A marker subclass asking for the request alone: the stand-in calls it, as FastAPI would."""

    async def __call__(self, request: Request) -> Any:
        return f"own:{type(await super().__call__(request)).__name__}"


def _marker_route(path: str, marker: type[AsyncProvide]) -> None:
    """A route at ``path`` answering what a ``marker`` of ``lifecycle`` (a subclass) resolves to."""

    async def route(value: Annotated[str, Depends(marker[Container.lifecycle], scope="request")]) -> str:
        return value

    route.__name__ = route.__qualname__ = f"{marker.__name__.lower()}_route"
    injected.add_api_route(path, inject(route), methods=["GET"])


for _path, _subclass in {
    "/tagged": Tagged,
    "/synchronous": Synchronous,
    "/bare": Bare,
    "/own-call": OwnCall,
}.items():
    _marker_route(_path, _subclass)


@injected.get("/limited")
@inject
async def limited_route(
    limited: Annotated[Any, Depends(AsyncProvide[Container.lifecycle], scope="request", max_concurrency=1)],
) -> str:
    """A marker under FastAPI's concurrency limit."""
    return type(limited).__name__


@injected.get("/key-taken")
@inject
async def key_taken_route(lifecycle: LifecycleDep, _injected_route_request: str = "") -> str:
    """A query parameter named as the stand-in's key for the request."""
    return f"{type(lifecycle).__name__}:{_injected_route_request}"


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


async def _json(
    http: aiohttp.ClientSession, url: str, status: int = 200, headers: dict[str, str] | None = None
) -> Any:
    async with http.get(url, headers=headers) as resp:
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


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/tagged", "Lifecycle@acme"),
        ("/synchronous", "sync:/synchronous"),
        ("/bare", "bare"),
        ("/limited", "Lifecycle"),
        ("/key-taken?_injected_route_request=mine", "Lifecycle:mine"),
    ],
)
async def test_markers_that_ask_for_more_are_left_to_fastapi(
    container: Container, http: aiohttp.ClientSession, spies: dict[str, int], path: str, answer: str
) -> None:
    """A subclass with parameters of its own, a concurrency limit, a name taken: FastAPI solves the marker."""
    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        assert await _json(http, f"{base}{path}", headers={"X-Tag": "acme"}) == answer
    assert spies["marker solved by FastAPI"] == 1


async def test_a_bad_request_is_refused_before_any_marker_runs(
    container: Container, http: aiohttp.ClientSession
) -> None:
    """Unlike FastAPI's order (dependencies, then parameters): a 422 never calls a provider."""
    made: list[Fake] = []

    def counted() -> Fake:
        made.append(Fake())
        return made[-1]

    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        with container.analysis_engine.client.override(providers.Callable(counted)):
            await _json(http, f"{base}/items/1?limit=0", status=422)
            assert made == []
            assert (await _json(http, f"{base}/items/1"))["client"] == id(made[0])


async def test_a_subclass_asking_for_the_request_alone_is_handed(
    container: Container, http: aiohttp.ClientSession, spies: dict[str, int]
) -> None:
    app = create_app(container, routers=[injected])
    async with serve(app) as base:
        assert await _json(http, f"{base}/own-call") == "own:Lifecycle"
    assert spies["marker solved by FastAPI"] == 0


async def _unknown_path(app: FastAPI) -> None:
    """One request for a path no route has, straight through ``app`` (no server, no lifespan)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/unknown", "raw_path": b"/unknown", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"gateway")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 404


async def test_rebuilt_routes_share_their_stand_in(container: Container) -> None:
    """Every app builds its routes' handlers again: the stand-ins, and FastAPI's cache of their contexts, do not grow."""
    await _unknown_path(create_app(container, routers=[injected]))
    stand_ins, contexts = dict(routing._STAND_INS), len(fastapi_routing._endpoint_context_cache)
    for _ in range(5):
        # FastAPI builds an included route's handler at the first request the app routes.
        await _unknown_path(create_app(container, routers=[injected]))
    assert stand_ins == routing._STAND_INS
    assert all(routing._STAND_INS[memo] is stand_in for memo, stand_in in stand_ins.items())
    assert len(fastapi_routing._endpoint_context_cache) == contexts
    # FastAPI's tracing names the callable it is given: the stand-in carries the endpoint's names.
    (item_stand_in,) = [f for (endpoint, _, _), f in stand_ins.items() if endpoint is item_route]
    assert (item_stand_in.__module__, item_stand_in.__qualname__) == (__name__, "item_route")
