"""Typed service methods take the verbs' per-call options, and their signatures survive inspection."""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import TypeAdapter

from app.clients import (
    AnalysisEngineClient,
    ClientError,
    ClientTimeoutError,
    IndicatorsResponse,
    MLWorkbenchClient,
    ModelInfo,
    Prediction,
    PriceSeries,
    RegimeResponse,
    ResourceNotFoundError,
    ServerError,
)
from app.clients.fallback import NO_FALLBACK, collect_degraded
from app.clients.operations import operation
from tests.support.upstream import Upstream, delayed, json, sequence

OPTIONS = ["timeout", "headers", "idempotency_key", "fallback", "cache"]
OPTION_DEFAULTS = {
    "timeout": None,
    "headers": None,
    "idempotency_key": None,
    "fallback": NO_FALLBACK,
    "cache": None,
}

# (client class, method, positional arguments, HTTP method, path under /api/v1/)
METHODS: list[tuple[type[Any], str, tuple[Any, ...], str, str]] = [
    (AnalysisEngineClient, "get_prices", ("EURUSD", "1h", 10), "GET", "prices/EURUSD"),
    (
        AnalysisEngineClient,
        "get_technical_indicators",
        ("EURUSD", "1h", [{"name": "SMA", "params": {"period": 3}}], 10),
        "POST",
        "indicators/calculate",
    ),
    (AnalysisEngineClient, "detect_market_regime", ("EURUSD", "1h"), "GET", "market-regime/EURUSD"),
    (MLWorkbenchClient, "list_models", (), "GET", "models"),
    (MLWorkbenchClient, "get_model", ("m1",), "GET", "models/m1"),
    (MLWorkbenchClient, "predict", ("m1", "EURUSD", "1h", {"rsi": 50.0}), "POST", "models/m1/predict"),
]
IDS = [m[1] for m in METHODS]

MODEL = {"id": "m1", "name": "M", "version": "1", "features": ["rsi"], "classes": ["down", "up"]}
# A well-formed answer of each method, and the model the method returns it as.
ANSWERS: dict[str, tuple[Any, Any]] = {
    "get_prices": (
        {
            "symbol": "EURUSD",
            "timeframe": "1h",
            "candles": [
                {"timestamp": "t0", "open": 1.0, "high": 1.2, "low": 0.9, "close": 1.1, "volume": 10.0}
            ],
        },
        PriceSeries,
    ),
    "get_technical_indicators": (
        {
            "symbol": "EURUSD",
            "timeframe": "1h",
            "results": [
                {"name": "SMA", "params": {"period": 3}, "values": [None, 1.5], "timestamps": ["a", "b"]}
            ],
        },
        IndicatorsResponse,
    ),
    "detect_market_regime": (
        {
            "symbol": "EURUSD",
            "timeframe": "1h",
            "regime": "ranging",
            "confidence": 0.7,
            "metrics": {"adx": 14.2},
        },
        RegimeResponse,
    ),
    "list_models": ([MODEL], list[ModelInfo]),
    "get_model": (MODEL, ModelInfo),
    "predict": ({"model_id": "m1", "symbol": "EURUSD", "prediction": "up", "probability": 0.8}, Prediction),
}


def answer(name: str) -> Any:
    """The JSON a method's upstream answers with."""
    return ANSWERS[name][0]


def returned(name: str) -> Any:
    """What the method returns for ``answer(name)``: the typed model (a list of them for list_models)."""
    data, model = ANSWERS[name]
    return TypeAdapter(model).validate_python(data)


# The documented positional parameters of each method, after ``self``.
POSITIONAL = {
    "get_prices": [("symbol", inspect.Parameter.empty), ("timeframe", "1h"), ("limit", 200)],
    "get_technical_indicators": [
        ("symbol", inspect.Parameter.empty),
        ("timeframe", "1h"),
        ("indicators", ()),
        ("limit", 200),
    ],
    "detect_market_regime": [("symbol", inspect.Parameter.empty), ("timeframe", "1h")],
    "list_models": [],
    "get_model": [("model_id", inspect.Parameter.empty)],
    "predict": [
        ("model_id", inspect.Parameter.empty),
        ("symbol", inspect.Parameter.empty),
        ("timeframe", inspect.Parameter.empty),
        ("features", inspect.Parameter.empty),
    ],
}


class ThreadedUpstream:
    """A real aiohttp server on its own thread and loop, for the blocking twins to call."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"ok": True}
        self.last_headers: dict[str, str] = {}
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _answer(self, request: web.Request) -> web.Response:
        self.last_headers = dict(request.headers)
        if self.status != 200:
            return web.json_response({"detail": "down"}, status=self.status)
        return web.json_response(self.body)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/v1"
        self._stop, self._loop = asyncio.Event(), asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def upstream_thread() -> Iterator[tuple[ThreadedUpstream, str]]:
    with ThreadedUpstream() as up:
        yield up, up.url


def _bound(client: Any, name: str) -> Callable[..., Awaitable[Any]]:
    method: Callable[..., Awaitable[Any]] = getattr(client, name)
    return method


def _expected(name: str, *, with_self: bool) -> list[tuple[str, Any, Any]]:
    params: list[tuple[str, Any, Any]] = []
    if with_self:
        params.append(("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty))
    params += [(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for p, d in POSITIONAL[name]]
    params += [(p, inspect.Parameter.KEYWORD_ONLY, OPTION_DEFAULTS[p]) for p in OPTIONS]
    return params


def _described(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
async def test_headers_reach_the_upstream(
    make_client, upstream: Upstream, cls, name, args, verb, path
) -> None:
    """``headers=`` on a service method arrive with the request, next to the client's own."""
    upstream.route("*", json(answer(name)))
    client = make_client(upstream.base_url, cls=cls)
    await _bound(client, name)(*args, headers={"X-Trace-Tag": "t-42", "X-Tenant": "desk-7"})
    request = upstream.requests[-1]
    assert (request.method, request.path) == (verb, f"/api/v1/{path}")
    assert request.headers["X-Trace-Tag"] == "t-42"
    assert request.headers["X-Tenant"] == "desk-7"
    assert "X-Request-ID" in request.headers


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
async def test_idempotency_key_is_sent_on_every_attempt(
    make_client, upstream: Upstream, cls, name, args, verb, path
) -> None:
    """``idempotency_key=`` goes out as Idempotency-Key, the same on the retry after a 503."""
    upstream.route(path, sequence(json({}, status=503), json(answer(name))))
    client = make_client(upstream.base_url, cls=cls, max_retries=2)
    assert await _bound(client, name)(*args, idempotency_key="order-77") == returned(name)
    assert upstream.hits[path] == 2
    assert [r.headers.get("Idempotency-Key") for r in upstream.requests] == ["order-77", "order-77"]


async def test_idempotency_key_makes_a_post_retryable(make_client, upstream: Upstream) -> None:
    """A plain POST is not retried; with an idempotency key passed the same way as to the methods, it is."""
    upstream.route("orders", sequence(json({}, status=503), json({"id": 1})))
    client = make_client(upstream.base_url, max_retries=2)
    with pytest.raises(ServerError):
        await client.post("orders", json={"qty": 1})
    upstream.route("orders", sequence(json({}, status=503), json({"id": 1})))
    assert await client.post("orders", json={"qty": 1}, idempotency_key="k-1") == {"id": 1}
    assert [r.headers.get("Idempotency-Key") for r in upstream.requests] == [None, "k-1", "k-1"]


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
async def test_timeout_bounds_the_whole_call(
    make_client, upstream: Upstream, cls, name, args, verb, path
) -> None:
    """``timeout=`` is the call's deadline: a slow upstream gives ClientTimeoutError within it, retries included."""
    upstream.route(path, delayed(5.0, json({"ok": True})))
    client = make_client(upstream.base_url, cls=cls, timeout_seconds=10.0, max_retries=3)
    started = time.monotonic()
    with pytest.raises(ClientTimeoutError) as info:
        await _bound(client, name)(*args, timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0
    assert info.value.operation == name


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
async def test_a_generous_timeout_lets_the_call_finish(
    make_client, upstream: Upstream, cls, name, args, verb, path
) -> None:
    """A ``timeout=`` longer than the answer takes changes nothing."""
    upstream.route(path, delayed(0.05, json(answer(name))))
    client = make_client(upstream.base_url, cls=cls)
    assert await _bound(client, name)(*args, timeout=5.0) == returned(name)


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
async def test_fallback_answers_an_unavailable_call(
    make_client, upstream: Upstream, cls, name, args, verb, path
) -> None:
    """``fallback=`` answers a 503 (value or callable) and marks the service degraded; a 404 still raises."""
    upstream.route(path, json({"detail": "down"}, status=503))
    client = make_client(upstream.base_url, cls=cls, max_retries=0)
    method = _bound(client, name)
    with collect_degraded() as degraded:
        assert await method(*args, fallback={"stale": True}) == {"stale": True}
        assert await method(*args, fallback=lambda error: error.status) == 503
    assert degraded == ["test-upstream"]
    upstream.route(path, json({"detail": "no such thing"}, status=404))
    with pytest.raises(ResourceNotFoundError):
        await method(*args, fallback={"stale": True})


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
def test_sync_twins_pass_the_options_through(upstream_thread, cls, name, args, verb, path) -> None:
    """The ``_sync`` twin takes the same options: headers, key and timeout reach the wire, fallback answers."""
    up, base_url = upstream_thread
    up.body = answer(name)
    client = cls({"base_url": base_url, "service_name": "sync-svc", "max_retries": 0})
    with client:
        twin = getattr(client, f"{name}_sync")
        assert twin(*args, headers={"X-Tenant": "d"}, idempotency_key="s-1", timeout=5.0) == returned(name)
        assert (up.last_headers["X-Tenant"], up.last_headers["Idempotency-Key"]) == ("d", "s-1")
        up.status = 503
        assert twin(*args, fallback="cached") == "cached"


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
def test_signatures_list_the_documented_parameters(cls, name, args, verb, path) -> None:
    """inspect.signature shows the real parameters, async and sync twin, on the class and bound."""
    client = cls({"base_url": "http://127.0.0.1:9/api/v1"})
    for attr in (name, f"{name}_sync"):
        assert _described(inspect.signature(getattr(cls, attr))) == _expected(name, with_self=True), attr
        assert _described(inspect.signature(getattr(client, attr))) == _expected(name, with_self=False), attr
    assert inspect.iscoroutinefunction(getattr(cls, name))
    assert not inspect.iscoroutinefunction(getattr(cls, f"{name}_sync"))
    hints = inspect.signature(getattr(cls, name), eval_str=True).parameters
    assert hints["timeout"].annotation == float | None
    client.close_sync()


@pytest.mark.parametrize(("cls", "name", "args", "verb", "path"), METHODS, ids=IDS)
def test_help_shows_the_parameters_and_the_docstring(cls, name, args, verb, path) -> None:
    """help() (pydoc) renders each method and its twin with every option, and the method's own docstring."""
    method = getattr(cls, name)
    for attr in (name, f"{name}_sync"):
        text = pydoc.render_doc(getattr(cls, attr), renderer=pydoc.plaintext)
        header = text.split(")")[0]
        assert "*args" not in text
        for option in OPTIONS:
            assert f"{option}:" in text, (attr, option)
        assert attr in header
    assert pydoc.getdoc(method) == inspect.cleandoc(method.__wrapped__.__doc__)
    assert method.__name__ == name
    assert method.__qualname__ == f"{cls.__name__}.{name}"
    class_help = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "idempotency_key" in class_help
    assert "Idempotency-Key" in class_help


async def test_operation_names_the_method_in_errors_and_keeps_its_identity() -> None:
    """The decorator sets ``operation`` on typed errors only, and keeps name, doc and signature."""

    async def lookup(item: str, *, strict: bool = False) -> str:
        """Find an item."""
        if strict:
            raise ResourceNotFoundError("missing", status=404)
        raise KeyError(item)

    wrapped = operation(lookup)
    assert (wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__) == ("lookup", "Find an item.", lookup)  # type: ignore[attr-defined]
    assert str(inspect.signature(wrapped)) == "(item: 'str', *, strict: 'bool' = False) -> 'str'"
    with pytest.raises(ClientError) as info:
        await wrapped("x", strict=True)
    assert info.value.operation == "lookup"
    with pytest.raises(KeyError):
        await wrapped("x")
    assert asyncio.iscoroutinefunction(wrapped)
