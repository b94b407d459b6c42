"""Transport conformance: the same calls against real servers give the same answers and errors on aiohttp and lean.

Every case runs on both transports (``ClientConfig.transport``) with one expected
outcome. Servers are aiohttp test servers and raw asyncio TCP servers on 127.0.0.1; the
server side counts connections by the client's port, so keep-alive reuse and the pool
bound are seen from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.clients import (
    BaseServiceClient,
    ClientClosedError,
    ClientConfig,
    ClientConnectionError,
    ClientResponseError,
    ClientTimeoutError,
    ResponseDecodeError,
)
from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.balanced import BalancedTransport
from app.clients.lean_transport import LeanTransport, default_transport
from app.clients.reconfigure import reconfigure_problems
from app.clients.response import RawResponse
from app.clients.transport import RAW_CONDITIONAL
from app.clients.wire_errors import CLOSED_IN_FLIGHT
from tests.support import bombs, rawtcp
from tests.support.transports import seam_request
from tests.support.upstream import Upstream, delayed, json


@pytest.fixture(params=["aiohttp", "lean"])
def transport(request: pytest.FixtureRequest) -> str:
    """The case's transport: each case runs on both, expecting the same outcome."""
    return str(request.param)


def _connections(upstream: Upstream) -> int:
    """How many connections the upstream's requests came over (each request keeps its handler)."""
    return len({id(r.protocol) for r in upstream.requests})


@pytest.fixture
def client(make_client: Callable[..., BaseServiceClient], transport: str) -> Callable[..., Any]:
    """``make_client`` on the case's transport, no retries unless asked."""

    def build(base_url: str, **overrides: Any) -> Any:
        overrides.setdefault("max_retries", 0)
        return make_client(base_url, transport=transport, **overrides)

    return build


def _is_transport(made: BaseServiceClient, transport: str) -> None:
    expected = LeanTransport if transport == "lean" else AiohttpTransport
    assert type(made._transport) is expected


# -- answers --------------------------------------------------------------------------------


async def test_chunked_body(client, transport, upstream: Upstream) -> None:
    """A chunked JSON body in several pieces is read whole."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b'{"a": [', b"1, 2, ", b"3]}"):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    upstream.route("c", chunked)
    made = client(upstream.base_url)
    _is_transport(made, transport)
    assert await made.get("c") == {"a": [1, 2, 3]}


async def test_keep_alive_reuses_one_connection(client, upstream: Upstream) -> None:
    """Twenty calls one after another go over one connection."""
    upstream.route("k", json({"ok": True}))
    made = client(upstream.base_url)
    for _ in range(20):
        assert await made.get("k") == {"ok": True}
    assert _connections(upstream) == 1


async def test_connection_close_is_not_reused(client, upstream: Upstream) -> None:
    """An answer with Connection: close: the next call opens a new connection, and succeeds."""
    upstream.route("x", json({"ok": True}, headers={"Connection": "close"}))
    made = client(upstream.base_url)
    for _ in range(3):
        assert await made.get("x") == {"ok": True}
    assert _connections(upstream) == 3


async def test_a_connection_the_server_closed_while_idle_is_not_used(client) -> None:
    """The server drops an idle kept-alive connection: the next call goes over a fresh one, no error."""
    accepted = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async with rawtcp.raw_server(once_then_close) as url:
        made = client(url)
        assert await made.get("a") == {}
        await asyncio.sleep(0.15)
        assert await made.get("b") == {}
    assert accepted == 2


@pytest.mark.parametrize(("status", "outcome"), [(204, None), (304, ClientResponseError)])
async def test_no_body_statuses(client, upstream: Upstream, status, outcome) -> None:
    """204 is None; 304 (not asked for) is a ClientResponseError; the connection serves the next call."""

    async def bodiless(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status)

    upstream.route("n", bodiless)
    upstream.route("ok", json([1]))
    made = client(upstream.base_url)
    if outcome is None:
        assert await made.get("n") is None
    else:
        with pytest.raises(outcome) as info:
            await made.get("n")
        assert info.value.status == status
    assert await made.get("ok") == [1]
    assert _connections(upstream) == 1


async def test_head_has_no_body(client, upstream: Upstream) -> None:
    """HEAD: no body read though Content-Length says 9; the connection serves the next call."""

    async def head(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"a": 1}\n', content_type="application/json")

    upstream.route("h", head)
    made = client(upstream.base_url)
    assert await made.request("HEAD", "h") is None
    assert await made.get("h") == {"a": 1}
    assert _connections(upstream) == 1


async def test_interim_and_close_delimited_answers(client) -> None:
    """A 100 Continue before the answer, and a body that runs until the close: both read."""
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json"
    async with rawtcp.raw_server(rawtcp.respond(head, b'{"until": "close"}')) as url:
        assert await client(url).get("x") == {"until": "close"}


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [rawtcp.half_response, rawtcp.truncated_chunked, rawtcp.garbage, rawtcp.reset],
    ids=["content-length-mismatch", "truncated-chunked", "garbage", "reset"],
)
async def test_broken_answers_are_connection_errors(client, behaviour) -> None:
    """Fewer bytes than promised, a cut chunk, non-HTTP bytes, a reset: ClientConnectionError, sent."""
    async with rawtcp.raw_server(behaviour) as url:
        with pytest.raises(ClientConnectionError) as info:
            await client(url).get("x")
    assert type(info.value) is ClientConnectionError
    assert info.value.request_sent is True
    assert info.value.__cause__ is not None
    assert str(info.value).startswith("test-upstream: GET x: connection broke: ")


@pytest.mark.parametrize(
    ("behaviour", "cause"),
    [
        (rawtcp.half_response, aiohttp.ClientPayloadError),
        (rawtcp.garbage, aiohttp.ClientResponseError),
        (rawtcp.reset, aiohttp.ServerDisconnectedError),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
async def test_messages_match_across_transports(client, behaviour, cause) -> None:
    """Broken answers read the same on both transports: one expected message and cause type each."""
    async with rawtcp.raw_server(behaviour) as url:
        with pytest.raises(ClientConnectionError) as info:
            await client(url).get("x")
    assert str(info.value) == f"test-upstream: GET x: connection broke: {cause.__name__}"
    assert type(info.value.__cause__) is cause


async def test_connect_refused(client) -> None:
    """Nothing listening: ClientConnectionError, not sent."""
    with pytest.raises(ClientConnectionError) as info:
        await client(rawtcp.closed_port_url()).get("x")
    assert info.value.request_sent is False


async def test_a_drip_times_out_at_the_attempt_timeout(client) -> None:
    """Headers at once, then a byte every 100 ms: the attempt timeout bounds the body too."""
    async with rawtcp.raw_server(rawtcp.drip) as url:
        started = time.monotonic()
        with pytest.raises(ClientTimeoutError) as info:
            await client(url, timeout_seconds=0.3).get("drip")
        elapsed = time.monotonic() - started
    assert isinstance(info.value.__cause__, TimeoutError)
    assert 0.25 <= elapsed < 0.6


async def test_a_gzip_bomb_is_refused_at_the_limit(client) -> None:
    """1 GiB of gzipped zeros: ResponseDecodeError at max_response_bytes, fast."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip"
    async with rawtcp.raw_server(rawtcp.respond(head, bombs.zeros_stream("gzip", 1024), chunked=True)) as url:
        with pytest.raises(ResponseDecodeError, match="limit") as info:
            await client(url, max_response_bytes=1024 * 1024).get("bomb")
    assert info.value.status == 200


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit(client, upstream: Upstream, framing) -> None:
    """A body over max_response_bytes, announced or not: ResponseDecodeError naming the limit."""

    async def big(request: web.Request) -> web.StreamResponse:
        if framing == "content-length":
            return web.json_response({"blob": "x" * 100_000})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b" " * 10_000)
        await resp.write_eof()
        return resp

    upstream.route("big", big)
    with pytest.raises(ResponseDecodeError, match="65536-byte limit"):
        await client(upstream.base_url, max_response_bytes=65536).get("big")


# -- redirects ------------------------------------------------------------------------------


async def test_request_heads_are_the_same_on_both_transports() -> None:
    """Per method, the lean transport writes the headers aiohttp writes: Content-Length: 0 where it does."""
    heads: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()

    calls = [("GET", None), ("HEAD", None), ("OPTIONS", None), ("DELETE", None),
             ("POST", None), ("PUT", None), ("PATCH", None), ("POST", {"a": 1})]  # fmt: skip
    seen: dict[str, dict[str, dict[str, str]]] = {}
    async with rawtcp.raw_server(capture) as url:
        for transport in ("aiohttp", "lean"):  # both here, in one test: not the module's parameter
            config = ClientConfig(base_url=url, service_name="heads", transport=transport, max_retries=0)
            async with BaseServiceClient(config) as client:
                for method, body in calls:
                    await client.request(method, "x", json=body)
                    lines = heads[-1].decode().split("\r\n")[1:]
                    fields = dict(line.split(": ", 1) for line in lines if line)
                    seen.setdefault(transport, {})[f"{method} {'with' if body else 'without'} a body"] = {
                        name.lower(): value
                        for name, value in fields.items()
                        if name.lower() != "x-request-id"
                    }
    # The one difference, on purpose (lean/wire.py): aiohttp's content type for no body at all.
    for name in ("POST without a body", "PUT without a body", "PATCH without a body"):
        assert seen["aiohttp"][name].pop("content-type") == "application/octet-stream"
    assert seen["lean"] == seen["aiohttp"]
    assert seen["aiohttp"]["DELETE without a body"]["content-length"] == "0"  # what the lean one missed
    assert "content-length" not in seen["aiohttp"]["GET without a body"]
    assert seen["aiohttp"]["POST with a body"]["content-length"] == "7"  # {"a":1}


async def test_redirects_are_followed_under_the_base_url_only(client, upstream: Upstream) -> None:
    """A 307 under the base URL is followed (method and body kept); one elsewhere is refused."""

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": upstream.base_url + "/there"})

    async def away(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async def there(request: web.Request) -> web.StreamResponse:
        return web.json_response({"method": request.method, "body": await request.json()})

    upstream.route("here", moved)
    upstream.route("away", away)
    upstream.route("there", there)
    made = client(upstream.base_url, follow_redirects=True)
    assert await made.post("here", json={"q": 1}) == {"method": "POST", "body": {"q": 1}}
    with pytest.raises(ClientResponseError, match="outside the base URL") as info:
        await made.get("away")
    assert (info.value.status, info.value.location) == (302, "/elsewhere")


async def test_a_redirect_not_followed_keeps_its_location(client, upstream: Upstream) -> None:
    """follow_redirects off: the 301 is a ClientResponseError with its Location."""

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "/api/v1/new"})

    upstream.route("old", moved)
    with pytest.raises(ClientResponseError) as info:
        await client(upstream.base_url).get("old")
    assert (info.value.status, info.value.location) == (301, "/api/v1/new")


# -- the pool and closing -------------------------------------------------------------------


async def test_concurrent_calls_stay_within_the_pool(client, upstream: Upstream) -> None:
    """40 calls at once, bulkhead 4: at most 4 connections, reused; every call answered."""
    upstream.route("slow", delayed(0.02, json({"ok": True})))
    made = client(upstream.base_url, bulkhead_max_concurrent=4, bulkhead_max_waiting=100)
    results = await asyncio.gather(*(made.get("slow") for _ in range(40)))
    assert results == [{"ok": True}] * 40
    assert _connections(upstream) <= 4
    assert upstream.max_in_flight <= 4


def _stuck(upstream: Upstream) -> asyncio.Event:
    """Route ``stuck``: an answer that takes 5 s; the event is set once a request is in."""
    started = asyncio.Event()

    async def stuck(request: web.Request) -> web.StreamResponse:
        started.set()
        await asyncio.sleep(5)
        return web.json_response({})

    upstream.route("stuck", stuck)
    return started


async def test_close_ends_a_call_in_flight(client, upstream: Upstream) -> None:
    """close() with a call waiting on its answer: that call and every later one end in ClientClosedError."""
    started = _stuck(upstream)
    made = client(upstream.base_url, max_retries=2)
    call = asyncio.ensure_future(made.get("stuck"))
    await asyncio.wait_for(started.wait(), 2)
    await made.close()
    with pytest.raises(ClientClosedError):
        await call
    with pytest.raises(ClientClosedError):
        await made.get("stuck")


async def test_transport_close_ends_its_own_sends(transport, upstream: Upstream) -> None:
    """The transport's aclose() under a send in flight: ClientClosedError; later sends too."""
    started = _stuck(upstream)
    config = ClientConfig(base_url=upstream.base_url, service_name="seam", transport=transport)
    sender = default_transport(config)
    request = seam_request(f"{upstream.base_url}/stuck")
    send = asyncio.ensure_future(sender.send(request, request.headers, 3.0))
    await asyncio.wait_for(started.wait(), 2)
    await sender.aclose()
    # The seam's promise, from the transport itself (not only once BaseServiceClient maps
    # it): aiohttp sees its connector close the socket under the read as a server
    # disconnect, which must not pass for the upstream's fault.
    with pytest.raises(ClientClosedError) as info:
        await send
    assert type(info.value) is ClientClosedError
    assert info.value.args[0] == CLOSED_IN_FLIGHT  # the one wording both transports share
    with pytest.raises(ClientClosedError):
        await sender.send(request, request.headers, 1.0)


async def test_reconfigure_takes_new_limits(client, upstream: Upstream) -> None:
    """A live reconfigure lowers max_response_bytes for the next call."""
    upstream.route("j", json({"blob": "x" * 5000}))
    made = client(upstream.base_url)
    assert len((await made.get("j"))["blob"]) == 5000
    made.reconfigure(made.config.model_copy(update={"max_response_bytes": 1000}))
    with pytest.raises(ResponseDecodeError, match="1000-byte limit"):
        await made.get("j")


# -- which transport is used ----------------------------------------------------------------


async def test_the_factory_falls_back_to_aiohttp(transport) -> None:
    """Lean only for transport=lean on http:// without an injected session; aiohttp otherwise."""
    http = ClientConfig(base_url="http://127.0.0.1:9/api", transport=transport)
    https = ClientConfig(base_url="https://127.0.0.1:9/api", transport=transport)
    async with aiohttp.ClientSession() as session:
        picked = [default_transport(http), default_transport(https), default_transport(http, session=session)]
        expected = [
            LeanTransport if transport == "lean" else AiohttpTransport,
            AiohttpTransport,
            AiohttpTransport,
        ]
        assert [type(t) for t in picked] == expected
        for t in picked:
            await t.aclose()
    assert reconfigure_problems(http, http.model_copy(update={"transport": "aiohttp"})) == (
        ["transport (APP_UPSTREAMS__<NAME>__TRANSPORT) cannot change without a restart: "
         "a client's transports (aiohttp or lean) are built at start"]
        if transport == "lean" else []
    )  # fmt: skip


async def test_many_instances_each_get_the_transport(client, transport) -> None:
    """With instances, each instance's transport is the configured one, and calls reach both."""
    ups = [Upstream(), Upstream()]
    for up in ups:
        await up.server.start_server()
        up.route("i", json({"ok": True}))
    try:
        made = client(ups[0].base_url, instances=[u.base_url for u in ups], load_balancer="round_robin")
        for _ in range(6):
            assert await made.get("i") == {"ok": True}
        balanced = made._transport
        assert isinstance(balanced, BalancedTransport)
        expected = LeanTransport if transport == "lean" else AiohttpTransport
        for up in ups:
            assert up.hits["i"] >= 1
            assert type(balanced.transport_for(up.base_url + "/")) is expected
        await made.close()
    finally:
        for up in ups:
            with contextlib.suppress(Exception):
                await up.server.close()


async def test_the_pool_bounds_sends_beyond_its_size(transport, upstream: Upstream) -> None:
    """Six sends at once straight to a transport of pool size 2: two connections, the rest wait their turn."""
    upstream.route("slow", delayed(0.1, json({"ok": True})))
    config = ClientConfig(
        base_url=upstream.base_url, service_name="seam", transport=transport, bulkhead_max_concurrent=2
    )
    sender = default_transport(config)
    try:
        requests = [seam_request(f"{upstream.base_url}/slow") for _ in range(6)]
        results = await asyncio.gather(*(sender.send(r, r.headers, 2.0) for r in requests))
        assert results == [{"ok": True}] * 6
        assert upstream.max_in_flight == 2
        assert _connections(upstream) == 2
        # A wait for a connection counts against the attempt's time, like the rest of it.
        timed = await asyncio.gather(
            *(sender.send(r, r.headers, 0.15) for r in requests), return_exceptions=True
        )
        assert timed[:2] == [{"ok": True}] * 2
        assert {type(r) for r in timed[2:]} == {ClientTimeoutError}
    finally:
        await sender.aclose()


async def test_a_304_announcing_a_large_representation_is_not_too_large(transport) -> None:
    """A revalidation's 304 whose Content-Length is the full representation's (over the limit): a 304, no body."""
    head = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50000000'
    async with rawtcp.raw_server(rawtcp.respond(head, b"")) as url:
        config = ClientConfig(base_url=url, service_name="seam", transport=transport, max_response_bytes=1024)
        sender = default_transport(config)
        conditional = seam_request(f"{url}/x")
        conditional.raw = RAW_CONDITIONAL
        try:
            got = await sender.send(conditional, conditional.headers, 2.0)
        finally:
            await sender.aclose()
    assert isinstance(got, RawResponse)
    assert (got.status, got.body) == (304, b"")


# -- the lean pool's own housekeeping -------------------------------------------------------


async def test_idle_connections_are_closed_after_the_keep_alive_time(
    make_client, upstream, monkeypatch
) -> None:
    """Lean: a connection idle past KEEPALIVE_SECONDS is closed by the pool's one sweeper timer."""
    monkeypatch.setattr("app.clients.lean.pool.KEEPALIVE_SECONDS", 0.1)
    upstream.route("k", json({}))
    made = make_client(upstream.base_url, transport="lean")
    await asyncio.gather(made.get("k"), made.get("k"))
    pool = made._transport.pool
    assert (pool.open_connections, pool.busy) == (2, 0)
    for _ in range(50):
        await asyncio.sleep(0.02)
        if pool.open_connections == 0:
            break
    assert pool.open_connections == 0
    assert await made.get("k") == {}  # a fresh one after that


async def test_the_containers_client_of_a_lean_upstream_uses_it(monkeypatch, upstream: Upstream) -> None:
    """The lifespan's client is not handed the shared aiohttp session, which would mean aiohttp."""
    from app.containers import Container  # noqa: PLC0415
    from settings import load_settings  # noqa: PLC0415

    upstream.route("market-regime/EURUSD", json({"ok": True}))
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__TRANSPORT", "lean")
    container = Container()
    container.settings.override(load_settings())
    client = await container.analysis_engine.client()
    try:
        assert isinstance(client._transport, LeanTransport)
        assert await client.get("market-regime/EURUSD") == {"ok": True}
    finally:
        await container.shutdown_resources()


# -- found by review: bounds and framing ----------------------------------------------------


async def test_a_header_line_that_never_ends_is_refused_early(client) -> None:
    """A header line past aiohttp's 8,190 bytes, never ended: refused at once, not buffered to the timeout."""
    sent = 0

    async def endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
            with contextlib.suppress(ConnectionError):
                for _ in range(400):  # 25.6 MB at most, in 64 KiB writes
                    writer.write(b"x" * 65536)
                    sent += 65536
                    await writer.drain()
        finally:
            writer.close()

    async with rawtcp.raw_server(endless_header) as url:
        started = time.monotonic()
        with pytest.raises(ClientConnectionError) as info:
            await client(url, timeout_seconds=20).get("x")
    assert isinstance(info.value.__cause__, aiohttp.ClientResponseError)
    assert time.monotonic() - started < 5
    assert sent < 4 * 1024 * 1024  # the client stopped reading long before the 25 MB


async def test_an_answer_nobody_asked_for_is_not_taken_for_the_one_asked(client) -> None:
    """Two answers in one write: the first is the call's, the second drops the connection."""
    two = (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a": 1}'
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    )

    async def both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(two)
                    await writer.drain()
        finally:
            writer.close()

    async with rawtcp.raw_server(both) as url:
        made = client(url)
        assert await made.get("x") == {"a": 1}
        assert await made.get("x") == {"a": 1}  # on a connection of its own, not the tainted one


async def test_a_waiter_handed_a_connection_as_the_pool_closes_gets_pool_closed() -> None:
    """Released to a waiter, then aclose() in the same pass: the waiter is told the pool closed."""
    from app.clients.lean.pool import Pool, PoolClosedError  # noqa: PLC0415

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    pool = Pool("127.0.0.1", port, 1)
    try:
        first = await pool.acquire(loop, loop.time() + 2)
        waiting = asyncio.create_task(pool.acquire(loop, loop.time() + 2))
        await asyncio.sleep(0.01)
        first.keep = True
        pool.release(first)  # handed to the waiter...
        await pool.aclose()  # ...and closed before the waiter runs again
        with pytest.raises(PoolClosedError):
            await waiting
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
