"""The client against real servers: escape refusal, size limit, headers, sync twins, concurrency."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from aiohttp import web

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    CircuitBreakerOpenError,
    ClientError,
    ResponseDecodeError,
    ServerError,
)
from app.observability.context import request_id_var
from tests.support import rawtcp
from tests.support.transports import connections_in_use, transport_closed
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


async def test_escaping_endpoint_sends_nothing(make_client, upstream: Upstream) -> None:
    """An endpoint that would leave the base URL is a ValueError, and no request is made."""
    client = make_client(upstream.base_url)
    for bad in ("../admin", "http://127.0.0.1:1/x", "a/%2E%2E/b"):
        with pytest.raises(ValueError, match="endpoint"):
            await client.get(bad)
    assert upstream.hits.total() == 0


async def test_path_params_reach_the_server_encoded(make_client, upstream: Upstream) -> None:
    """The upstream sees one encoded segment, not a traversal."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url)
    await client.get("items/{id}", path_params={"id": "../../etc"})
    assert upstream.requests[0].raw_path == "/api/v1/items/..%2F..%2Fetc"


async def test_content_length_over_limit_is_refused_unread(make_client, upstream: Upstream) -> None:
    """A declared length over max_response_bytes fails without reading the body."""
    upstream.route("big", json({"x": "y" * 5000}))
    client = make_client(upstream.base_url, max_response_bytes=1000)
    with pytest.raises(ResponseDecodeError, match="limit"):
        await client.get("big")


async def test_streamed_body_is_cut_off_at_the_limit(make_client, upstream: Upstream) -> None:
    """A chunked body is cut off while it streams: the server cannot push more than the limit."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b" " * 65536
        try:
            for _ in range(1600):  # 100 MiB if nobody stops it
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    upstream.route("endless", endless)
    client = make_client(upstream.base_url, max_response_bytes=256 * 1024)
    with pytest.raises(ResponseDecodeError, match="limit"):
        await client.get("endless")
    await asyncio.sleep(0.05)
    assert sent < 16 * 1024 * 1024  # socket buffers, not 100 MiB


async def test_headers_sent(make_client, upstream: Upstream) -> None:
    """The API key goes in its header; each call has an X-Request-ID; JSON bodies are JSON."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url, api_key="k-123456", api_key_header="X-Api-Token")
    await client.post("echo", json={"a": 1}, headers={"X-Extra": "1"})
    request = upstream.requests[0]
    assert request.headers["X-Api-Token"] == "k-123456"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Extra"] == "1"
    assert len(request.headers["X-Request-ID"]) == 32
    assert upstream.bodies[0] == b'{"a":1}'


async def test_a_callers_header_replaces_ours_whatever_its_case(make_client, upstream: Upstream) -> None:
    """A per-call "accept" or "x-api-token" replaces the client's own: one of each on the wire, the caller's."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url, api_key="k-123456", api_key_header="X-Api-Token")
    await client.get("x", headers={"accept": "application/json; q=1", "x-api-token": "k-other-654321"})
    headers = upstream.requests[0].headers
    assert headers.getall("Accept") == ["application/json; q=1"]
    assert headers.getall("X-Api-Token") == ["k-other-654321"]


async def test_inbound_request_id_is_forwarded(make_client, upstream: Upstream) -> None:
    """A request id set for the inbound request is reused by outbound calls."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url)
    token = request_id_var.set("inbound-abc")
    try:
        await client.get("x")
    finally:
        request_id_var.reset(token)
    assert upstream.requests[0].headers["X-Request-ID"] == "inbound-abc"


def test_sync_twins_from_a_plain_thread(upstream_thread, transport) -> None:
    """get_sync and a service method's twin work from a thread with no event loop."""
    base_url, hits = upstream_thread
    results: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with AnalysisEngineClient(
                {"base_url": base_url, "service_name": "ae", "transport": transport}
            ) as client:
                results.append(client.get_sync("prices/{symbol}", path_params={"symbol": "EURUSD"}))
                results.append(client.get_prices_sync("GBPUSD", "4h", 10))
                results.append(client.post_sync("echo", json={"n": 1}))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert not errors
    assert results[0]["path"] == "/api/v1/prices/EURUSD"
    assert (results[1].symbol, results[1].timeframe, results[1].candles) == ("GBPUSD", "4h", [])
    assert results[2]["body"] == {"n": 1}
    assert not [t for t in threading.enumerate() if t.name == "ae-sync"]
    assert hits == ["/api/v1/prices/EURUSD", "/api/v1/prices/GBPUSD", "/api/v1/echo"]


async def test_sync_twin_inside_a_running_loop_raises(make_client, upstream: Upstream) -> None:
    """Called from a coroutine, a sync twin refuses with a clear RuntimeError (and sends nothing)."""
    client = make_client(upstream.base_url)
    with pytest.raises(RuntimeError, match="running event loop"):
        client.get_sync("x")
    assert upstream.hits.total() == 0


async def test_async_and_sync_share_the_breaker(make_client, upstream: Upstream) -> None:
    """Failures seen by the sync twins open the breaker for async calls too."""
    upstream.route("down", json({}, status=500))
    client: BaseServiceClient = make_client(upstream.base_url, circuit_breaker_failure_threshold=2)

    def sync_calls() -> list[str]:
        out = []
        for _ in range(2):
            try:
                client.get_sync("down")
            except ServerError as exc:
                out.append(type(exc).__name__)
        return out

    assert await asyncio.to_thread(sync_calls) == ["ServerError", "ServerError"]
    with pytest.raises(CircuitBreakerOpenError):
        await client.get("down")


async def test_a_retried_calls_error_chain_holds_only_its_own_errors(make_client, upstream: Upstream) -> None:
    """A retried call's last error is not chained to the first attempt's: no "during handling of"."""
    upstream.route("down", json({}, status=503))
    client: BaseServiceClient = make_client(upstream.base_url, max_retries=1, retry_base_delay=0.01)
    with pytest.raises(ServerError) as info:
        await client.get("down")
    last = info.value.__cause__
    assert isinstance(last, ServerError)
    assert last is not info.value
    assert info.value.attempts == 2
    assert last.__context__ is None  # the first attempt's 503 ended before this one began
    with pytest.raises(ServerError) as once:
        await make_client(upstream.base_url, max_retries=0).get("down")
    assert once.value.__context__ is None
    assert once.value.__cause__ is None


def _awaiting(task: asyncio.Task[object]) -> list[str]:
    """The coroutines of ``task`` from the outermost in (each one's qualified name)."""
    names, coro = [], task.get_coro()
    while hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


@pytest.mark.parametrize(
    ("options", "via_execute"),
    [({}, False), ({"timeout": 30.0}, False), ({"rate_limit_per_second": 1000.0}, True)],
    ids=["plain", "deadline-forwarded", "rate-limited"],
)
async def test_the_common_call_waits_in_its_own_frame_and_the_transports(
    make_client, options, via_execute
) -> None:
    """In flight, a plain call (a deadline forwarded too) holds request() and the send alone; a rate limit needs execute()."""
    options = dict(options)  # the parameter's dict is shared by both transports' runs
    timeout = options.pop("timeout", None)
    arrived = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        arrived.set()
        await asyncio.sleep(3600)

    seen: list[bytes] = []
    async with rawtcp.raw_server(hold) as url:
        client: BaseServiceClient = make_client(url, max_retries=0, **options)
        task = asyncio.ensure_future(client.get("x", timeout=timeout))
        async with asyncio.timeout(5):
            await arrived.wait()
        chain = _awaiting(task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert chain[0] == "BaseServiceClient.request"
    assert chain[1].endswith("Transport.send") != via_execute
    assert ("Pipeline.execute" in chain) is via_execute
    assert "TransportAttempt.__call__" not in chain  # no wrapper coroutine: the attempt is bare
    assert (b"X-Request-Timeout-Ms: " in seen[0]) is (timeout is not None)  # still forwarded


async def test_200_concurrent_calls_against_a_30_percent_failing_server(make_client, upstream) -> None:
    """Every call ends in a result or a typed error; no task or connection is left behind."""
    counter = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal counter
        counter += 1
        n = counter  # this request's number, fixed before it waits: every tenth three fail
        await asyncio.sleep(0.001 * (n % 7))
        if n % 10 < 3:
            return web.json_response({"detail": "flaky"}, status=503)
        return web.json_response({"n": n})

    upstream.route("flaky", flaky)
    tasks_before = asyncio.all_tasks()
    client = make_client(
        upstream.base_url,
        max_retries=2,
        bulkhead_max_concurrent=50,
        bulkhead_max_waiting=200,
        circuit_breaker_failure_threshold=50,
    )
    results = await asyncio.gather(*(client.get("flaky") for _ in range(200)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]
    assert all(isinstance(r, ClientError) for r in failed)
    assert len(ok) > 150  # retries hide most of the 30%
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    transport = client._transport
    assert connections_in_use(transport) == 0  # every connection back in the pool
    await client.close()
    assert transport_closed(transport)
    await asyncio.sleep(0.05)  # the server's keep-alive handlers see the close and end
    gc.collect()
    assert asyncio.all_tasks() - tasks_before == set()


@pytest.fixture
def upstream_thread():
    """An upstream echo server on its own thread and loop, for tests that are themselves sync."""
    loop = asyncio.new_event_loop()
    hits: list[str] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        body = await request.json() if request.can_read_body else None
        # The echo is also a well-formed (empty) PriceSeries, for the typed get_prices twin.
        series = {
            "symbol": request.path.rsplit("/", 1)[-1],
            "timeframe": request.query.get("timeframe", "1h"),
        }
        return web.json_response(
            {"path": request.path, "query": dict(request.query), "body": body, **series, "candles": []}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/api/v1", hits
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
