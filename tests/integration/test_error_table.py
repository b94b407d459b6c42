"""Every row of the DESIGN §4 error table, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from typing import NoReturn

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from app.clients import (
    AnalysisEngineClient,
    AuthenticationError,
    BaseServiceClient,
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientAuthenticationError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ClientTimeoutError,
    ClientValidationError,
    DataValidationError,
    RateLimitedError,
    ResourceNotFoundError,
    ResponseDecodeError,
    RetryExhaustedError,
    ServerError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from tests.support import rawtcp
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


class _NoSuchHost(AbstractResolver):
    """A resolver that fails like DNS does for an unknown name, without touching the network."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, f"Name or service not known: {host}")

    async def close(self) -> None:
        return None


def _assert_context(err: ClientError, method: str, endpoint: str, status: int | None) -> None:
    assert err.service_name == "test-upstream"
    assert err.method == method
    assert err.endpoint == endpoint
    assert err.status == status
    assert isinstance(err, ServiceError)


async def test_connect_refused_is_a_connection_error(make_client) -> None:
    """A refused connect is a ClientConnectionError (a ServiceUnavailableError), with the cause kept."""
    client = make_client(rawtcp.closed_port_url(), max_retries=0)
    with pytest.raises(ClientConnectionError) as info:
        await client.get("items/{id}", path_params={"id": 7})
    _assert_context(info.value, "GET", "items/{id}", None)
    assert isinstance(info.value, ServiceUnavailableError)
    assert info.value.request_sent is False
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_dns_failure_is_a_connection_error(make_client, transport, monkeypatch) -> None:
    """A name that does not resolve is a ClientConnectionError; nothing was sent."""
    session = None
    if transport == "lean":
        # The lean pool resolves through the loop (create_connection): its lookup fails
        # here as a real one for this name would, without asking a real resolver.
        async def no_such_host(*args: object, **kwargs: object) -> NoReturn:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_host)
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_NoSuchHost()))
    try:
        client = make_client("http://no-such-host.invalid/api", max_retries=0, session=session)
        with pytest.raises(ClientConnectionError) as info:
            await client.get("ping")
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
        assert info.value.request_sent is False
    finally:
        if session is not None:
            await session.close()


@pytest.mark.parametrize(
    "behaviour", [rawtcp.reset, rawtcp.half_response, rawtcp.garbage], ids=lambda b: b.__name__
)
async def test_broken_responses_are_connection_errors(make_client, behaviour) -> None:
    """A reset, a truncated body or non-HTTP bytes before a full response: ClientConnectionError."""
    async with rawtcp.raw_server(behaviour) as url:
        client = make_client(url, max_retries=0)
        with pytest.raises(ClientConnectionError) as info:
            await client.get("thing")
    _assert_context(info.value, "GET", "thing", None)
    assert info.value.__cause__ is not None


async def test_a_dropped_connection_is_not_silently_resent(make_client) -> None:
    """Aiohttp would resend a GET once on a disconnect; the client's sessions do not."""
    accepted = 0

    async def count_and_reset(reader, writer) -> None:
        nonlocal accepted
        accepted += 1
        await rawtcp.reset(reader, writer)

    async with rawtcp.raw_server(count_and_reset) as url:
        client = make_client(url, max_retries=0)
        with pytest.raises(ClientConnectionError):
            await client.get("thing")
        client2 = make_client(url, max_retries=2, circuit_breaker_failure_threshold=10)
        with pytest.raises(ClientConnectionError) as info:
            await client2.get("thing")
    assert info.value.attempts == 3
    assert accepted == 1 + 3  # one connection per attempt, none hidden


async def test_attempt_timeout_is_a_timeout_error(make_client) -> None:
    """A peer that never answers ends in ClientTimeoutError (a ServiceTimeoutError)."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client = make_client(url, max_retries=0, timeout_seconds=0.1)
        with pytest.raises(ClientTimeoutError) as info:
            await client.get("slow")
    assert isinstance(info.value, ServiceTimeoutError)
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_a_dripping_body_times_out(make_client) -> None:
    """Headers at once, then a byte every 100 ms: the attempt timeout covers the body too."""
    async with rawtcp.raw_server(rawtcp.drip) as url:
        client = make_client(url, max_retries=0, timeout_seconds=0.3)
        with pytest.raises(ClientTimeoutError):
            await client.get("drip")


STATUS_ROWS = [
    (400, ClientValidationError, DataValidationError),
    (422, ClientValidationError, DataValidationError),
    (401, ClientAuthenticationError, AuthenticationError),
    (403, ClientAuthenticationError, AuthenticationError),
    (404, ResourceNotFoundError, DataValidationError),
    (429, RateLimitedError, ServiceUnavailableError),
    (500, ServerError, ServiceUnavailableError),
    (503, ServerError, ServiceUnavailableError),
    (418, ClientResponseError, DataValidationError),
    (409, ClientResponseError, DataValidationError),
]


@pytest.mark.parametrize(("status", "cls", "category"), STATUS_ROWS)
async def test_status_rows(make_client, upstream: Upstream, status, cls, category) -> None:
    """Each HTTP status maps to its row's class and platform category, keeping detail and code."""
    upstream.route("x/1", json({"detail": "nope", "code": "E_X"}, status=status))
    client = make_client(upstream.base_url, max_retries=0)
    with pytest.raises(cls) as info:
        await client.get("x/{n}", path_params={"n": 1})
    err = info.value
    assert isinstance(err, category)
    _assert_context(err, "GET", "x/{n}", status)
    assert err.detail == "nope"
    assert err.code == "E_X"
    assert "x/{n}" in str(err)
    assert "x/1" not in str(err)  # the template, never the filled-in path


async def test_429_carries_retry_after(make_client, upstream: Upstream) -> None:
    """A 429's Retry-After becomes ``retry_after`` (within the retry_max_delay cap)."""
    upstream.route("r", json({"detail": "slow down"}, status=429, headers={"Retry-After": "7"}))
    client = make_client(upstream.base_url, max_retries=0, retry_max_delay=30.0)
    with pytest.raises(RateLimitedError) as info:
        await client.get("r")
    assert info.value.retry_after == 7.0


async def test_3xx_not_followed_keeps_location(make_client, upstream: Upstream) -> None:
    """A redirect, when redirects are not followed, is a ClientResponseError with its Location."""

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/api/v1/elsewhere"})

    upstream.route("old", moved)
    client = make_client(upstream.base_url)
    with pytest.raises(ClientResponseError) as info:
        await client.get("old")
    assert info.value.status == 302
    assert info.value.location == "/api/v1/elsewhere"
    assert upstream.hits["old"] == 1  # a 3xx is not retried


async def test_redirects_followed_within_the_origin_only(make_client, upstream: Upstream) -> None:
    """With follow_redirects, a same-origin hop is followed; a cross-origin one is refused."""

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "/api/v1/new"})

    async def away(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "http://127.0.0.2:1/steal"})

    upstream.route("old", moved)
    upstream.route("new", json({"ok": True}))
    upstream.route("away", away)
    client = make_client(upstream.base_url, follow_redirects=True, api_key="sk-redirect-secret")
    assert await client.get("old") == {"ok": True}
    with pytest.raises(ClientResponseError, match="cross-origin"):
        await client.get("away")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b"{not json"), ("application/problem+json", b"\xff\xfe")],
)
async def test_bad_json_is_a_decode_error(make_client, upstream: Upstream, content_type, body) -> None:
    """A body that is not the JSON its content type claims: ResponseDecodeError."""

    async def bad(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    upstream.route("bad", bad)
    client = make_client(upstream.base_url)
    with pytest.raises(ResponseDecodeError) as info:
        await client.get("bad")
    assert info.value.status == 200
    assert upstream.hits["bad"] == 1  # a decode error is not retried


async def test_breaker_open_row(make_client, upstream: Upstream) -> None:
    """An open breaker: CircuitBreakerOpenError with the time to half-open, nothing sent."""
    upstream.route("down", json({"detail": "down"}, status=500))
    client = make_client(
        upstream.base_url,
        max_retries=0,
        circuit_breaker_failure_threshold=2,
        circuit_breaker_reset_timeout_seconds=30,
    )
    for _ in range(2):
        with pytest.raises(ServerError):
            await client.get("down")
    with pytest.raises(CircuitBreakerOpenError) as info:
        await client.get("down")
    assert upstream.hits["down"] == 2
    assert info.value.retry_after is not None
    assert 29 < info.value.retry_after <= 30
    assert info.value.attempts == 0
    assert isinstance(info.value, ServiceUnavailableError)


async def test_bulkhead_full_row(make_client, upstream: Upstream) -> None:
    """A full bulkhead: BulkheadFullError at once."""
    client = make_client(upstream.base_url, bulkhead_max_concurrent=1, bulkhead_max_waiting=0)
    assert client.bulkhead.try_acquire()
    try:
        with pytest.raises(BulkheadFullError) as info:
            await client.get("anything")
    finally:
        client.bulkhead.release()
    assert upstream.hits.total() == 0
    assert isinstance(info.value, ServiceUnavailableError)


async def test_retry_exhausted_row(make_client, upstream: Upstream) -> None:
    """Retries given up: RetryExhaustedError that is also the last attempt's class."""
    upstream.route("flaky", json({"detail": "busy"}, status=503))
    client = make_client(upstream.base_url, max_retries=2)
    with pytest.raises(RetryExhaustedError) as info:
        await client.get("flaky")
    err = info.value
    assert isinstance(err, ServerError)
    assert isinstance(err, ServiceUnavailableError)
    assert err.attempts == 3
    assert err.status == 503
    assert isinstance(err.last_error, ServerError)
    assert err.__cause__ is err.last_error
    assert upstream.hits["flaky"] == 3


async def test_every_attempt_timing_out_is_still_a_timeout(make_client) -> None:
    """``except ClientTimeoutError`` catches a call whose every attempt timed out."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client = make_client(url, max_retries=1, timeout_seconds=0.05)
        with pytest.raises(ClientTimeoutError) as info:
            await client.get("slow")
    assert isinstance(info.value, RetryExhaustedError)
    assert info.value.attempts == 2


async def test_typed_errors_pass_through_service_methods(make_client, upstream: Upstream) -> None:
    """Service methods let the typed error through, with the operation name added."""
    upstream.route("prices/EURUSD", json({"detail": "unknown"}, status=404))
    client = make_client(upstream.base_url, cls=AnalysisEngineClient)
    with pytest.raises(ResourceNotFoundError) as info:
        await client.get_prices("EURUSD")
    assert info.value.operation == "get_prices"
    assert info.value.endpoint == "prices/{symbol}"
    assert "get_prices" in str(info.value)


async def test_successful_bodies(make_client, upstream: Upstream) -> None:
    """JSON for json and +json, None for empty or 204, text for anything else."""

    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(text="plain words")

    async def empty(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def nothing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def problem(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"a": 1}', content_type="application/vnd.x+json")

    upstream.route("json", json({"a": [1, 2]}))
    upstream.route("text", text)
    upstream.route("empty", empty)
    upstream.route("nothing", nothing)
    upstream.route("problem", problem)
    client: BaseServiceClient = make_client(upstream.base_url)
    assert await client.get("json") == {"a": [1, 2]}
    assert await client.get("text") == "plain words"
    assert await client.get("empty") is None
    assert await client.delete("nothing") is None
    assert await client.get("problem") == {"a": 1}
