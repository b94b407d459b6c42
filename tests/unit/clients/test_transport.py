"""The transport seam: AiohttpTransport alone against a real upstream, and a client on another transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from app.clients import BaseServiceClient, ClientClosedError, ClientConfig, ClientConnectionError, ServerError
from app.clients.aiohttp_transport import AiohttpTransport
from app.clients.session import is_plain
from app.clients.transport import DEADLINE_HEADER, Request, Transport
from tests.support.transports import seam_request
from tests.support.upstream import Upstream, json


def _config(base_url: str, **fields: Any) -> ClientConfig:
    return ClientConfig(base_url=base_url, service_name="seam", **fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_one_attempt_is_decoded_and_its_status_noted(upstream: Upstream) -> None:
    """send() returns the decoded body, notes the status on the record, and aclose() closes its own session."""
    upstream.route("r", json({"ok": True}))
    transport = AiohttpTransport(_config(upstream.base_url))
    request = seam_request(f"{upstream.base_url}/r")
    assert await transport.send(request, request.headers, 2.0) == {"ok": True}
    assert request.record.status == 200
    session = transport.session
    assert session is not None
    assert is_plain(session)  # its own (new_session's): answers may be taken without read()
    await transport.aclose()
    assert session.closed
    assert transport.session is None


async def test_a_status_is_the_tables_error_naming_the_call(upstream: Upstream) -> None:
    """A 503 is a ServerError with the call's service, method and template, and its Retry-After."""
    upstream.route("r", json({"detail": "busy", "code": "busy"}, status=503, headers={"Retry-After": "1"}))
    transport = AiohttpTransport(_config(upstream.base_url))
    request = seam_request(f"{upstream.base_url}/r", endpoint="r/{x}")
    try:
        with pytest.raises(ServerError) as info:
            await transport.send(request, request.headers, 2.0)
    finally:
        await transport.aclose()
    error = info.value
    assert (error.service_name, error.method, error.endpoint, error.status) == ("seam", "GET", "r/{x}", 503)
    assert error.retry_after == 1.0
    assert request.record.status == 503


async def test_the_attempt_sends_the_headers_it_is_given(upstream: Upstream) -> None:
    """The headers passed to send() are the ones on the wire (an attempt's own copy, not the call's)."""
    upstream.route("r", json({}))
    transport = AiohttpTransport(_config(upstream.base_url))
    request = seam_request(f"{upstream.base_url}/r")
    try:
        await transport.send(request, {**request.headers, DEADLINE_HEADER: "1500"}, 2.0)
    finally:
        await transport.aclose()
    assert upstream.requests[-1].headers[DEADLINE_HEADER] == "1500"
    assert DEADLINE_HEADER not in request.headers


async def test_connect_refused_is_a_connection_error_before_sending() -> None:
    """Nobody listening: ClientConnectionError with request_sent False (safe to retry for any method)."""
    base = f"http://127.0.0.1:{_free_port()}/api"
    transport = AiohttpTransport(_config(base))
    try:
        with pytest.raises(ClientConnectionError) as info:
            await transport.send(seam_request(f"{base}/r"), {}, 2.0)
    finally:
        await transport.aclose()
    assert info.value.request_sent is False
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_an_injected_session_is_used_and_left_open(upstream: Upstream) -> None:
    """A transport on an injected session sends through it and does not close it; once closed, it refuses."""
    upstream.route("r", json({"n": 1}))
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(_config(upstream.base_url), session=session)
        request = seam_request(f"{upstream.base_url}/r")
        assert await transport.send(request, request.headers, 2.0) == {"n": 1}
        await transport.aclose()
        assert not session.closed
        assert transport.session is session


async def test_an_injected_sessions_trace_hooks_see_the_body(upstream: Upstream) -> None:
    """A session of someone else's, with aiohttp trace hooks: its body-chunk hook fires, as read() fires it.

    The transport takes a body that came whole with its head without aiohttp's
    ``read()`` only on the sessions it made itself, which have no hooks.
    """
    upstream.route("r", json({"n": 1}))
    chunks: list[bytes] = []

    async def on_chunk(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        chunks.append(params.chunk)

    traces = aiohttp.TraceConfig()
    traces.on_response_chunk_received.append(on_chunk)
    async with aiohttp.ClientSession(trace_configs=[traces]) as session:
        assert not is_plain(session)
        transport = AiohttpTransport(_config(upstream.base_url), session=session)
        for _ in range(3):
            request = seam_request(f"{upstream.base_url}/r")
            assert await transport.send(request, request.headers, 2.0) == {"n": 1}
        await transport.aclose()
    assert chunks == [b'{"n": 1}'] * 3


async def test_a_closed_transport_refuses_with_client_closed(upstream: Upstream) -> None:
    """After aclose() a transport opens no new session: a send is ClientClosedError."""
    transport = AiohttpTransport(_config(upstream.base_url))
    await transport.aclose()
    with pytest.raises(ClientClosedError):
        await transport.send(seam_request(f"{upstream.base_url}/r"), {}, 2.0)
    assert transport.session is None


class _Canned:
    """A transport that answers every attempt from memory, and counts what it was asked."""

    made: list[_Canned] = []  # noqa: RUF012 - the test reads every instance the client made

    def __init__(self, config: ClientConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self.session_given = session
        self.sent: list[tuple[str, str, dict[str, str], float]] = []
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        _Canned.made.append(self)

    async def send(self, request: Request, headers: Mapping[str, str], timeout: float) -> Any:
        self.loop = asyncio.get_running_loop()
        self.sent.append((request.method, str(request.url), dict(headers), timeout))
        request.record.status = 200
        return {"via": "canned", "attempt": request.record.attempts}

    async def aclose(self) -> None:
        self.closed = True


class _CannedClient(BaseServiceClient):
    transport_factory = _Canned


async def test_a_client_sends_through_the_transport_its_class_names() -> None:
    """Another transport slots in: the async calls and the sync twins each use one of their own, both closed."""
    _Canned.made.clear()
    client = _CannedClient(_config("http://upstream.invalid/api", timeout_seconds=3.0))
    async_side, sync_side = _Canned.made
    _: Transport = async_side  # the fake satisfies the protocol
    assert await client.get("items/{id}", path_params={"id": "a b"}, params={"q": "1"}) == {
        "via": "canned",
        "attempt": 1,
    }
    method, url, headers, timeout = async_side.sent[0]
    assert (method, url, timeout) == ("GET", "http://upstream.invalid/api/items/a%20b?q=1", 3.0)
    assert "X-Request-ID" in headers
    assert await asyncio.to_thread(client.get_sync, "items") == {"via": "canned", "attempt": 1}
    assert len(sync_side.sent) == 1
    assert sync_side.loop is not async_side.loop
    await client.close()
    assert async_side.closed
    assert sync_side.closed


async def test_an_injected_session_reaches_the_transport() -> None:
    """``BaseServiceClient(config, session=...)`` hands the session to the async side's transport only."""
    _Canned.made.clear()
    async with aiohttp.ClientSession() as session:
        client = _CannedClient(_config("http://upstream.invalid/api"), session=session)
        async_side, sync_side = _Canned.made
        assert async_side.session_given is session
        assert sync_side.session_given is None
        await client.close()
