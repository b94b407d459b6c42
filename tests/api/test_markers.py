"""AsyncProvide: a route's injected client comes from the app's container, resolved without a task per request."""

# No `from __future__ import annotations`: @inject reads the Annotated markers.

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, get_args

import aiohttp
import pytest
from dependency_injector import providers
from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute

from app.api import deps
from app.api.deps import AnalysisEngineDep, LifecycleDep, UpstreamClient
from app.api.markers import AsyncProvide
from app.api.routing import InjectedRoute
from app.clients import AnalysisEngineClient
from app.clients.testing import override_client
from app.containers import Container
from app.main import create_app
from tests.support.asgi import serve

plain = APIRouter()


@plain.get("/which")
@inject
async def which(client: AnalysisEngineDep) -> dict[str, Any]:
    """The injected client's identity."""
    return {"id": id(client), "type": type(client).__name__}


@plain.get("/which-by-name")
@inject
async def which_by_name(client: AnalysisEngineClient = UpstreamClient("analysis_engine")) -> dict[str, Any]:  # noqa: B008
    """The same client through the by-name marker."""
    return {"id": id(client)}


@plain.websocket("/ws")
@inject
async def ws(websocket: WebSocket, lifecycle: LifecycleDep) -> None:
    """A WebSocket route: FastAPI hands markers a WebSocket, not a Request."""
    await websocket.accept()
    await websocket.send_text(type(lifecycle).__name__)
    await websocket.close()


@plain.get("/lifecycle")
@inject
async def lifecycle_route(lifecycle: LifecycleDep) -> dict[str, Any]:
    """What the container's ``lifecycle`` provides, by class name."""
    return {"type": type(lifecycle).__name__}


async def lifecycle_of(lifecycle: LifecycleDep) -> AsyncIterator[Any]:
    """A generator dependency of the default (request) scope, itself on a marker's alias."""
    yield lifecycle


@plain.get("/lifecycle-twice")
@inject
async def lifecycle_twice(
    lifecycle: LifecycleDep, via: Annotated[Any, Depends(lifecycle_of)]
) -> dict[str, Any]:
    """The alias twice in one request: directly and through a generator dependency."""
    return {"same": lifecycle is via, "type": type(lifecycle).__name__}


def _copied(routes: APIRouter, route_class: type[APIRoute]) -> APIRouter:
    """``routes``' endpoints again, on a router of ``route_class``."""
    copy = APIRouter(route_class=route_class)
    for route in routes.routes:
        if isinstance(route, APIRoute):
            copy.add_api_route(route.path, route.endpoint, methods=list(route.methods))
        elif isinstance(route, APIWebSocketRoute):
            copy.add_api_websocket_route(route.path, route.endpoint)
    return copy


#: Every test here runs on FastAPI's own routes and on the gateway's InjectedRoute.
ROUTERS = {"APIRoute": plain, "InjectedRoute": _copied(plain, InjectedRoute)}


@pytest.fixture(params=sorted(ROUTERS))
def router(request: pytest.FixtureRequest) -> APIRouter:
    """The test routes, on each route class."""
    return ROUTERS[request.param]


class Fake:
    """A stand-in client (DI override tests are where fakes belong)."""

    service_name = "analysis-engine-service"


class Recording:
    """A fake that answers every attribute (as recording fakes do): it is not awaitable."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Record the coroutine name of every task created on ``loop`` from now on."""
    names: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        names.append(getattr(coro, "__qualname__", type(coro).__name__))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return names


async def _get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_routes_get_the_lifespan_client_and_overrides(
    container: Container, http: Any, router: APIRouter
) -> None:
    app: FastAPI = create_app(container, routers=[router])
    async with serve(app) as base:
        opened = await container.analysis_engine.client()
        first = await _get(http, f"{base}/which")
        assert first == {"id": id(opened), "type": "AnalysisEngineClient"}
        assert (await _get(http, f"{base}/which-by-name"))["id"] == id(opened)
        fake = Fake()
        with override_client(container, "analysis_engine", fake):
            assert (await _get(http, f"{base}/which"))["id"] == id(fake)
            assert (await _get(http, f"{base}/which-by-name"))["id"] == id(fake)
        assert (await _get(http, f"{base}/which"))["id"] == id(opened)


async def test_no_task_per_request_for_injection(container: Container, http: Any, router: APIRouter) -> None:
    """dependency-injector's own resolution of an async Resource wraps it in a task and a gather."""
    app = create_app(container, routers=[router])
    loop = asyncio.get_running_loop()
    async with serve(app) as base:
        await _get(http, f"{base}/which")  # the first request binds the marker to the container
        names = _counting_tasks(loop)
        try:
            for _ in range(3):
                await _get(http, f"{base}/which")
        finally:
            loop.set_task_factory(None)
    assert names, "the counting factory saw no task at all: it was not in place"
    assert not [n for n in names if "_await_injection" in n], names


@pytest.mark.parametrize("state", ["missing", "none"])
async def test_an_app_without_a_container_falls_back_to_inject(
    container: Container, http: Any, state: str, router: APIRouter
) -> None:
    """A wired route mounted on an app of one's own (no ``app.state.container``) still gets its client."""
    create_app(container, routers=[router])  # wires this module to ``container``
    app = FastAPI(lifespan=container.lifespan())
    if state == "none":
        app.state.container = None
    app.include_router(router)
    async with serve(app) as base:
        opened = await container.analysis_engine.client()
        assert (await _get(http, f"{base}/which"))["id"] == id(opened)


async def test_websocket_routes_get_their_dependencies(container: Container) -> None:
    """Driven over ASGI directly: the test server (uvicorn) has no WebSocket library here.

    On FastAPI's routes alone: a router's ``route_class`` is not used for WebSocket routes.
    """
    app = create_app(container, routers=[plain])
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/ws", "raw_path": b"/ws",
        "query_string": b"", "root_path": "", "headers": [(b"host", b"gateway")], "subprotocols": [],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"], sent
    assert sent[1]["text"] == "Lifecycle"


async def test_an_override_that_answers_every_attribute_is_not_awaited(
    container: Container, http: Any, router: APIRouter
) -> None:
    app = create_app(container, routers=[router])
    async with serve(app) as base:
        with container.lifecycle.override(providers.Object(Recording())):
            assert (await _get(http, f"{base}/lifecycle"))["type"] == "Recording"
        assert (await _get(http, f"{base}/lifecycle"))["type"] == "Lifecycle"


class Counted:
    """A new one per provider call: tells one call per request from two."""

    made = 0

    def __init__(self) -> None:
        Counted.made += 1


async def test_a_request_scoped_generator_dependency_shares_the_markers_value(
    container: Container, http: Any, router: APIRouter
) -> None:
    """A generator dependency of the default scope may depend on an alias, sharing its value.

    The aliases are request-scoped: a "function" scope would refuse this route, and
    FastAPI's per-request cache gives both uses one provider call (two would make two
    objects here).
    """
    app = create_app(container, routers=[router])
    async with serve(app) as base:
        with container.lifecycle.override(providers.Factory(Counted)):
            before = Counted.made
            for _ in range(2):
                assert await _get(http, f"{base}/lifecycle-twice") == {"same": True, "type": "Counted"}
            assert Counted.made - before == 2
        assert await _get(http, f"{base}/lifecycle-twice") == {"same": True, "type": "Lifecycle"}


async def _fake() -> Fake:
    return Fake()


async def test_an_override_answering_a_coroutine_is_awaited(
    container: Container, http: Any, router: APIRouter
) -> None:
    """Not only a Resource's finished future: any awaitable answer is awaited."""
    app = create_app(container, routers=[router])
    async with serve(app) as base:
        with container.lifecycle.override(providers.Coroutine(_fake)):
            assert (await _get(http, f"{base}/lifecycle"))["type"] == "Fake"


def test_the_aliases_declare_the_request_scope() -> None:
    """Without a declared scope FastAPI classifies the marker again on every request (~9k instructions)."""
    aliases = [alias for name, alias in vars(deps).items() if name.endswith("Dep")]
    aliases.append(Annotated[Any, UpstreamClient("analysis_engine")])
    markers = [
        depends
        for alias in aliases
        for depends in get_args(alias)[1:]
        if isinstance(depends.dependency, AsyncProvide)
    ]
    assert len(markers) == len(aliases) - 1, "every alias but BearerDep is a marker's"
    assert {depends.scope for depends in markers} == {"request"}
