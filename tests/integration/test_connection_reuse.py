"""Each answer gives its kept-alive connection back: the next call goes out on the same one.

The aiohttp transport skips its release and its wait for the request's writer when the
answer was read whole and aiohttp has given the connection back already. These tests
hold it to what that promises, on both transports: a run of calls of every kind of
answer (JSON, text, empty, 204, HEAD, error statuses with a JSON body and without one) uses one
connection; a POST whose upload is not yet read when its answer arrives does not
leave the next call without one; and a body that comes after its head (not there yet
when the head is read, so awaited) keeps its connection too. Redirects are followed on
their head (a body that never ends holds nothing up; an empty one keeps the connection),
as the call's start said, whatever a reload says meanwhile; and bytes of an answer
nobody asked for never reach the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.clients import BaseServiceClient, ClientError
from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.lean_transport import LeanTransport
from tests.support import rawtcp
from tests.support.upstream import Handler, Upstream

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


def _held(client: BaseServiceClient) -> int:
    """Connections the client's transport holds now: none between calls (a held one has leaked)."""
    transport = client._transport
    if isinstance(transport, AiohttpTransport):
        session = transport.session
        return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]
    assert isinstance(transport, LeanTransport)
    return transport._pool.busy


def _from_port(ports: list[int], answer: Callable[[], web.StreamResponse]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        return answer()

    return handler


async def test_calls_of_every_kind_of_answer_share_one_connection(
    upstream: Upstream, make_client: Callable[..., BaseServiceClient]
) -> None:
    """Twenty-four calls in turn, six kinds of answer: one connection, from the first to the last."""
    ports: list[int] = []
    upstream.route("json", _from_port(ports, lambda: web.json_response({"ok": True})))
    upstream.route("text", _from_port(ports, lambda: web.Response(text="plain")))
    upstream.route("empty", _from_port(ports, lambda: web.Response(status=204)))
    upstream.route("missing", _from_port(ports, lambda: web.json_response({"detail": "no"}, status=404)))
    upstream.route("bare", _from_port(ports, lambda: web.Response(status=500)))
    client = make_client(upstream.base_url, max_retries=0)
    try:
        for _ in range(4):
            assert await client.get("json") == {"ok": True}
            assert await client.get("text") == "plain"
            assert await client.get("empty") is None
            assert await client.request("HEAD", "json") is None
            with pytest.raises(ClientError) as missing:
                await client.get("missing")
            assert missing.value.status == 404
            with pytest.raises(ClientError) as failing:
                await client.get("bare")
            assert failing.value.status == 500
            assert _held(client) == 0
    finally:
        await client.close()
    assert len(ports) == 24
    assert set(ports) == {ports[0]}  # a connection not given back would have made the next call open one


# An upload larger than the sockets' buffers, not yet read when its answer comes. (Past
# 1 MiB as bytes, aiohttp would warn that it may block the loop: the transport streams it,
# and the suite's warnings are errors.)
async def test_an_answer_that_comes_before_the_upload_ends_leaves_a_connection_for_the_next_call(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """A 4 MB POST answered before it is read (its upload still going): its answer, then the next call's."""
    seen: list[int] = []

    async def early(request: web.Request) -> web.StreamResponse:
        # The whole answer goes out first, then the upload is read: a server that replies
        # early and drains the body for keep-alive.
        body = b'{"accepted": true}'
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        seen.append(len(await request.read()))
        await response.write_eof()
        return response

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", early)
    async with TestServer(app, host="127.0.0.1") as server:
        client = make_client(str(server.make_url("/")), max_retries=0, timeout_seconds=10.0)
        try:
            assert await client.post("upload", json={"blob": "x" * (4 * 1024 * 1024)}) == {"accepted": True}
            # Its upload was waited for (or never needed a task): nothing of it left running.
            assert _held(client) == 0
            assert not [t for t in asyncio.all_tasks() if "write_bytes" in repr(t.get_coro())]
            assert await client.get("after") == {"accepted": True}
            assert _held(client) == 0
        finally:
            await client.close()
    # The GET came with no body. The upload came whole (the lean transport writes it all at
    # once) or not at all: aiohttp stops streaming a body whose answer has come, and drops
    # that connection, so the server's read of it fails and notes nothing.
    assert 0 in seen
    assert set(seen) <= {0, len(b'{"blob":""}') + 4 * 1024 * 1024}  # orjson's JSON: no spaces


async def test_a_body_that_comes_after_its_head_is_awaited_and_its_connection_kept(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """Head, a pause, then the body, twice on one connection: both bodies read, one connection."""
    connections: list[int] = []
    body = b'{"late": true}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def late(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.05)  # the head alone first: the client has no body yet
        writer.write(body)
        return True

    async def split(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await rawtcp.keep_alive(late)(reader, writer)

    async with rawtcp.raw_server(split) as url:
        client = make_client(url, max_retries=0)
        try:
            assert await client.get("first") == {"late": True}
            assert await client.get("second") == {"late": True}
        finally:
            await client.close()
    assert len(connections) == 1


_THERE = b'{"there": true}'
_FOUND = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_THERE),
    _THERE,
)
_Moved = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def _redirecting(moved: _Moved) -> rawtcp.Behaviour:
    """A raw server: ``GET /api/v1/moved`` answered by ``moved`` (False: the connection is done), the rest 200."""

    async def answer(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if head.startswith(b"GET /api/v1/moved "):
            return await moved(reader, writer)
        writer.write(_FOUND)
        return True

    return rawtcp.keep_alive(answer)


async def _check_three_hops(client: BaseServiceClient) -> None:
    """Three calls of ``moved`` that follow its redirect, each leaving no connection held; then closes ``client``."""
    try:
        for _ in range(3):
            assert await client.get("moved") == {"there": True}
            assert _held(client) == 0
    finally:
        await client.close()


async def test_a_redirect_followed_before_its_body_ends_gives_its_connection_back(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """A 302 whose 100-byte body comes in two parts, followed: the answer, and no connection left held.

    Both transports follow on the head, the body unread: that connection cannot be kept,
    and must be given back (closed).
    """

    async def moved(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: /api/v1/there\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        )
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest of the body later
        writer.write(b"x" * 90)
        return True

    async with rawtcp.raw_server(_redirecting(moved)) as url:
        await _check_three_hops(make_client(url, max_retries=0, follow_redirects=True))


async def test_a_redirect_whose_body_never_ends_is_followed_at_once(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """A 302 that sends its head and then nothing more: followed on its head, well within the timeout."""
    hung: list[asyncio.StreamWriter] = []

    async def moved(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /api/v1/there\r\nContent-Length: 100000\r\n\r\nxx")
        hung.append(writer)
        await reader.read()  # the rest never comes: held until the client lets go
        return False

    async with rawtcp.raw_server(_redirecting(moved)) as url:
        client = make_client(url, max_retries=0, follow_redirects=True, timeout_seconds=5)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await client.get("moved") == {"there": True}
            assert loop.time() - started < 2.5  # not the attempt's 5 s timeout
            assert _held(client) == 0
            assert len(hung) == 1
        finally:
            await client.close()


async def test_a_redirect_with_an_empty_body_keeps_its_connection(
    upstream: Upstream, make_client: Callable[..., BaseServiceClient]
) -> None:
    """A 302 whose (empty) body is whole with its head: the hop and its target go out on one connection."""
    ports: list[int] = []
    there = f"{upstream.base_url}/there".split("//", 1)[1].split("/", 1)[1]
    upstream.route(
        "moved", _from_port(ports, lambda: web.Response(status=302, headers={"Location": f"/{there}"}))
    )
    upstream.route("there", _from_port(ports, lambda: web.json_response({"there": True})))
    await _check_three_hops(make_client(upstream.base_url, max_retries=0, follow_redirects=True))
    assert len(ports) == 6
    assert set(ports) == {ports[0]}


async def test_a_reload_mid_call_does_not_change_how_its_redirect_is_read(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """Redirects switched off while a call waits for its 302: that call still follows it; the next does not."""

    async def moved(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.1)  # the reload comes first
        body = b'{"detail": "moved for maintenance", "code": "MOVED"}'
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: /api/v1/there\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return True

    async with rawtcp.raw_server(_redirecting(moved)) as url:
        client = make_client(url, max_retries=0, follow_redirects=True)
        try:
            call = asyncio.ensure_future(client.get("moved"))
            await asyncio.sleep(0.02)
            client.reconfigure(client.config.model_copy(update={"follow_redirects": False}))
            assert await call == {"there": True}
            with pytest.raises(ClientError) as stopped:
                await client.get("moved")
            assert (stopped.value.status, stopped.value.code) == (302, "MOVED")
            assert _held(client) == 0
        finally:
            await client.close()


async def test_bytes_of_an_answer_nobody_asked_for_cost_the_connection_not_the_next_call(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """An answer, then in the same write the start of another: the next call goes out on a new connection."""
    answer = b'{"ok": true}'
    whole = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(answer),
        answer,
    )
    served: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(1)
        first = len(served) == 1  # the first connection's first answer has the stray bytes

        async def answer(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            nonlocal first
            writer.write(whole + (b"HTTP/1.1 200 OK\r\nX-Stray: y\r\n" if first else b""))
            first = False
            return True

        await rawtcp.keep_alive(answer)(reader, writer)

    async with rawtcp.raw_server(serve) as url:
        client = make_client(url, max_retries=0)
        try:
            for _ in range(3):
                assert await client.get("x") == {"ok": True}
            assert _held(client) == 0
        finally:
            await client.close()
    # aiohttp drops the stray bytes and keeps the connection; the lean transport drops the
    # connection (its parser is inside the stray answer) and opens one more.
    assert len(served) in (1, 2)
