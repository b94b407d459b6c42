"""The response cache in a client's calls, against a real upstream that counts requests (RFC 9111)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.clients import (
    BaseServiceClient,
    ClientConfig,
    ClientResponseError,
    ClientTimeoutError,
    ResponseDecodeError,
    ServerError,
)
from app.clients.fallback import collect_degraded
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from tests.support.manual_clock import ManualClock
from tests.support.upstream import Upstream, json

pytestmark = [pytest.mark.asyncio, pytest.mark.both_transports]  # conftest: on aiohttp and on lean


def _config(upstream: Upstream, transport: str, **extra: Any) -> ClientConfig:
    return ClientConfig(
        base_url=upstream.base_url,
        transport=transport,
        service_name="cached-svc",
        cache_enabled=True,
        max_retries=0,
        timeout_seconds=5,
        **extra,
    )


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def cacheable(
    data: Callable[[web.Request], Any], cache_control: str, *, etag: bool = True, vary: str | None = None
) -> Callable[[web.Request], Any]:
    """A handler answering JSON with ``cache_control``, an ETag, and 304 to a matching If-None-Match."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.json_response(data(request))
        assert response.body is not None
        body = bytes(response.body)  # type: ignore[arg-type]
        headers = {"Cache-Control": cache_control}
        if etag:
            headers["ETag"] = _etag(body)
        if vary:
            headers["Vary"] = vary
        if etag and request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        response.headers.update(headers)
        return response

    return handler


class Breakable:
    """A cacheable JSON answer that becomes a 503 once ``down`` is set."""

    def __init__(self, data: Any, cache_control: str) -> None:
        self.down = False
        self._answer = cacheable(lambda r: data, cache_control)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return web.json_response({"detail": "down"}, status=503)
        return await self._answer(request)


class Harness:
    """A client on a manual clock with its own metric registry, over the counting upstream."""

    def __init__(self, upstream: Upstream, transport: str, **extra: Any) -> None:
        self.clock = ManualClock()
        self.registry = CollectorRegistry()
        config = _config(upstream, transport, **extra)
        self.policies = ClientPolicies.from_config(config, self.clock, families=MetricFamilies(self.registry))
        self.client = BaseServiceClient(config, policies=self.policies)

    def lookups(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "service_client_cache_lookups_total", {"peer_service": "cached-svc", "result": result}
        )
        return value or 0.0


@pytest.fixture
async def harness(upstream: Upstream, transport: str) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**extra: Any) -> Harness:
        h = Harness(upstream, transport, **extra)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.client.close()


async def test_fresh_hits_make_no_upstream_call(upstream: Upstream, harness: Callable[..., Harness]) -> None:
    """Within max-age, repeated GETs are answered from the store: the upstream sees one request."""
    upstream.route("prices/EURUSD", cacheable(lambda r: {"n": 1}, "max-age=60"))
    h = harness()
    answers = [await h.client.get("prices/EURUSD") for _ in range(5)]
    assert answers == [{"n": 1}] * 5
    assert upstream.hits["prices/EURUSD"] == 1
    assert h.lookups("miss") == 1
    assert h.lookups("hit") == 4


async def test_each_hit_is_the_callers_own_copy(upstream: Upstream, harness: Callable[..., Harness]) -> None:
    """A caller that mutates its answer does not change what the next caller gets."""
    upstream.route("models", cacheable(lambda r: {"features": ["a"]}, "max-age=60"))
    h = harness()
    first = await h.client.get("models")
    first["features"].append("mutated")
    assert await h.client.get("models") == {"features": ["a"]}


async def test_query_parameters_are_part_of_the_key(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """Two timeframes are two entries; the same timeframe again is a hit."""
    upstream.route("prices/EURUSD", cacheable(lambda r: {"tf": r.query["timeframe"]}, "max-age=60"))
    h = harness()
    assert await h.client.get("prices/EURUSD", params={"timeframe": "1h"}) == {"tf": "1h"}
    assert await h.client.get("prices/EURUSD", params={"timeframe": "1d"}) == {"tf": "1d"}
    assert await h.client.get("prices/EURUSD", params={"timeframe": "1h"}) == {"tf": "1h"}
    assert upstream.hits["prices/EURUSD"] == 2


async def test_stale_entry_is_revalidated_and_a_304_is_served_from_the_store(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """Past max-age the call is conditional (If-None-Match); the 304 answer comes from the store, freshened."""
    upstream.route("models/m1", cacheable(lambda r: {"id": "m1"}, "max-age=10"))
    h = harness()
    assert await h.client.get("models/m1") == {"id": "m1"}
    await h.clock.advance(11)
    assert await h.client.get("models/m1") == {"id": "m1"}
    assert upstream.hits["models/m1"] == 2
    conditional = upstream.requests[-1]
    assert conditional.headers.get("If-None-Match", "").startswith('"')
    assert h.lookups("revalidated") == 1
    # Freshened by the 304: fresh again for another max-age.
    assert await h.client.get("models/m1") == {"id": "m1"}
    assert upstream.hits["models/m1"] == 2


async def test_no_store_is_never_stored(upstream: Upstream, harness: Callable[..., Harness]) -> None:
    """A no-store answer is fetched every time, and replaces nothing."""
    upstream.route("quote", cacheable(lambda r: {"q": 1}, "no-store"))
    h = harness()
    for _ in range(3):
        assert await h.client.get("quote") == {"q": 1}
    assert upstream.hits["quote"] == 3
    assert h.lookups("hit") == 0
    assert len(h.policies.cache.cache.store) == 0  # type: ignore[union-attr,arg-type]


async def test_no_cache_answers_are_revalidated_every_time(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """A no-cache answer is stored but never served without a 304 first."""
    upstream.route("models", cacheable(lambda r: {"m": []}, "no-cache"))
    h = harness()
    for _ in range(3):
        assert await h.client.get("models") == {"m": []}
    assert upstream.hits["models"] == 3
    assert h.lookups("revalidated") == 2


async def test_vary_separates_variants(upstream: Upstream, harness: Callable[..., Harness]) -> None:
    """An answer that varies on Accept-Language is not served to a request with another value."""
    upstream.route(
        "greeting",
        cacheable(
            lambda r: {"lang": r.headers.get("Accept-Language", "-")}, "max-age=60", vary="Accept-Language"
        ),
    )
    h = harness()
    assert await h.client.get("greeting", headers={"Accept-Language": "en"}) == {"lang": "en"}
    assert await h.client.get("greeting", headers={"Accept-Language": "fr"}) == {"lang": "fr"}
    assert await h.client.get("greeting", headers={"Accept-Language": "fr"}) == {"lang": "fr"}
    assert upstream.hits["greeting"] == 2


async def test_authenticated_answers_follow_section_3_5(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """With an API key, a plain max-age answer is not stored (shared cache); a public one is."""
    upstream.route("private", cacheable(lambda r: {"p": 1}, "max-age=60"))
    upstream.route("public", cacheable(lambda r: {"p": 2}, "public, max-age=60"))
    h = harness(api_key="k-123456789")
    for _ in range(2):
        await h.client.get("private")
        await h.client.get("public")
    assert upstream.hits["private"] == 2
    assert upstream.hits["public"] == 1


async def test_credential_scope_separates_callers(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """Two clients with different API keys never share an entry, even for a public answer."""
    upstream.route("public", cacheable(lambda r: {"key": r.headers["X-API-Key"]}, "public, max-age=60"))
    a = harness(api_key="key-aaaaaaaa")
    # Same policies (so the same store) but another credential: a call-level key.
    assert await a.client.get("public") == {"key": "key-aaaaaaaa"}
    assert await a.client.get("public", headers={"X-API-Key": "key-bbbbbbbb"}) == {"key": "key-bbbbbbbb"}
    assert await a.client.get("public") == {"key": "key-aaaaaaaa"}
    assert upstream.hits["public"] == 2


async def test_two_hundred_concurrent_misses_make_one_upstream_call(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """200 callers of one key arriving together share a single fetch."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return await cacheable(lambda r: {"n": 1}, "max-age=60")(request)

    upstream.route("prices/EURUSD", slow)
    h = harness(bulkhead_max_concurrent=5, bulkhead_max_waiting=5)
    calls = [asyncio.ensure_future(h.client.get("prices/EURUSD")) for _ in range(200)]
    for _ in range(1000):  # until the one fetch reached the upstream (every caller is waiting by then)
        if upstream.hits["prices/EURUSD"]:
            break
        await asyncio.sleep(0.001)
    release.set()
    answers = await asyncio.gather(*calls)
    assert answers == [{"n": 1}] * 200
    assert upstream.hits["prices/EURUSD"] == 1


async def test_cache_false_bypasses_the_store(upstream: Upstream, harness: Callable[..., Harness]) -> None:
    """A call with cache=False goes to the upstream even with a fresh entry."""
    upstream.route("models", cacheable(lambda r: {"m": 1}, "max-age=60"))
    h = harness()
    await h.client.get("models")
    await h.client.get("models", cache=False)
    assert upstream.hits["models"] == 2


async def test_a_hit_needs_no_breaker_or_bulkhead(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """With the breaker open, a fresh entry still answers (no trial, no slot)."""
    upstream.route("models", cacheable(lambda r: {"m": 1}, "max-age=60"))
    h = harness()
    await h.client.get("models")
    h.policies.breaker.open()
    assert await h.client.get("models") == {"m": 1}
    assert upstream.hits["models"] == 1


async def test_stale_if_error_serves_the_stale_answer_marked_degraded(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """Upstream failing (503) past max-age but within stale-if-error: the stale answer, degraded."""
    handler = Breakable({"v": 1}, "max-age=10, stale-if-error=300")
    upstream.route("prices/EURUSD", handler)
    h = harness()
    await h.client.get("prices/EURUSD")
    handler.down = True
    await h.clock.advance(20)
    with collect_degraded() as degraded:
        assert await h.client.get("prices/EURUSD") == {"v": 1}
    assert degraded == ["cached-svc"]
    assert h.lookups("stale_if_error") == 1
    # Past stale-if-error the failure is the caller's to see.
    await h.clock.advance(400)
    with pytest.raises(ServerError):
        await h.client.get("prices/EURUSD")


async def test_stale_while_revalidate_serves_at_once_and_refreshes_in_the_background(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """Within stale-while-revalidate, the stale answer is returned and one refresh updates the store."""
    version = {"v": 1}
    upstream.route("models", cacheable(lambda r: dict(version), "max-age=10, stale-while-revalidate=60"))
    h = harness()
    assert await h.client.get("models") == {"v": 1}
    version["v"] = 2
    await h.clock.advance(15)
    assert await h.client.get("models") == {"v": 1}  # stale, served at once
    cache = h.policies.cache
    assert cache is not None
    for _ in range(1000):  # until the background refresh has stored its answer
        if cache.results.get("stored") == 2:
            break
        await asyncio.sleep(0.005)
    assert await h.client.get("models") == {"v": 2}
    assert upstream.hits["models"] == 2


async def test_must_revalidate_never_serves_stale_on_error(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """must-revalidate forbids the stale answer even within stale-if-error."""
    handler = Breakable({"v": 1}, "max-age=10, must-revalidate, stale-if-error=300")
    upstream.route("x", handler)
    h = harness()
    await h.client.get("x")
    handler.down = True
    await h.clock.advance(20)
    with pytest.raises(ServerError):
        await h.client.get("x")


async def test_the_cache_is_off_by_default(upstream: Upstream, transport: str) -> None:
    """Without cache_enabled every GET reaches the upstream, whatever its headers say."""
    upstream.route("models", cacheable(lambda r: {"m": 1}, "max-age=60"))
    async with BaseServiceClient(ClientConfig(base_url=upstream.base_url, transport=transport)) as client:
        assert client.policies.cache is None
        await client.get("models")
        await client.get("models")
    assert upstream.hits["models"] == 2


async def test_a_follower_waits_its_own_deadline_not_the_first_callers(
    upstream: Upstream, harness: Callable[..., Harness], transport: str
) -> None:
    """A caller with 5 s joining a fetch started by one with 0.2 s gets the answer; the first times out."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.4)
        return web.json_response({"v": 1}, headers={"Cache-Control": "max-age=60"})

    upstream.route("slow", slow)
    client = BaseServiceClient(_config(upstream, transport))
    try:
        leader = asyncio.ensure_future(client.get("slow", timeout=0.2))
        for _ in range(1000):  # the shared fetch is on its way
            if upstream.hits["slow"]:
                break
            await asyncio.sleep(0.001)
        follower = asyncio.ensure_future(client.get("slow", timeout=5))
        first, second = await asyncio.gather(leader, follower, return_exceptions=True)
    finally:
        await client.close()
    assert isinstance(first, ClientTimeoutError)
    assert second == {"v": 1}
    assert upstream.hits["slow"] == 1


async def test_a_successful_put_drops_the_stored_get(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """RFC 9111 §4.4: after a PUT to the URL, the next GET goes to the upstream and sees the change."""
    state = {"v": 1}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            state["v"] = (await request.json())["v"]
            return web.json_response(state)
        return web.json_response(state, headers={"Cache-Control": "max-age=600"})

    upstream.route("item", handler)
    h = harness()
    assert await h.client.get("item") == {"v": 1}
    assert await h.client.get("item") == {"v": 1}
    assert await h.client.put("item", json={"v": 2}) == {"v": 2}
    assert await h.client.get("item") == {"v": 2}
    assert upstream.hits["item"] == 3


async def test_an_undecodable_answer_is_not_stored(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """A 200 with broken JSON fails the call and is not stored: once the upstream is fixed, the next call works."""
    state = {"broken": True}

    async def handler(request: web.Request) -> web.StreamResponse:
        body = b"{not json" if state["broken"] else b'{"v": 1}'
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "max-age=600"}
        )

    upstream.route("item", handler)
    h = harness()
    with pytest.raises(ResponseDecodeError):
        await h.client.get("item")
    state["broken"] = False
    assert await h.client.get("item") == {"v": 1}
    assert upstream.hits["item"] == 2


async def test_a_callers_own_conditional_request_passes_the_cache_by(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """A call with its own If-None-Match is sent once, as without the cache, and its 304 is the caller's."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"e1"':
            return web.Response(status=304, headers={"ETag": '"e1"'})
        return web.json_response({"v": 1}, headers={"ETag": '"e1"', "Cache-Control": "max-age=60"})

    upstream.route("item", handler)
    h = harness()
    with pytest.raises(ClientResponseError) as raised:
        await h.client.get("item", headers={"If-None-Match": '"e1"'})
    assert raised.value.status == 304
    assert upstream.hits["item"] == 1


async def test_no_trace_of_a_credential_is_stored_for_vary(
    upstream: Upstream, harness: Callable[..., Harness]
) -> None:
    """With Vary: Authorization the entry records a marker, not the token nor a digest of it."""
    upstream.route(
        "x", json({"v": 1}, headers={"Cache-Control": "public, max-age=60", "Vary": "Authorization"})
    )
    h = harness(auth={"type": "bearer", "token": "hunter2-token"})
    await h.client.get("x")
    store = h.policies.cache.cache.store  # type: ignore[union-attr]
    [key] = list(store._entries)  # type: ignore[attr-defined]
    entry = store.get(key)
    assert entry is not None
    assert dict(entry.vary or ()) == {"authorization": "<credential>"}
    held = repr(entry) + repr(entry.headers) + key.url + key.scope
    assert "hunter2" not in held
    assert hashlib.sha256(b"Bearer hunter2-token").hexdigest()[:16] not in held


async def test_two_clients_with_different_keys_never_share_an_entry(
    upstream: Upstream, transport: str
) -> None:
    """Two clients on the same policies (so one store) with different API keys each get their own answer."""
    upstream.route("public", cacheable(lambda r: {"key": r.headers["X-API-Key"]}, "public, max-age=60"))
    clock = ManualClock()
    first = _config(upstream, transport, api_key="key-aaaaaaaa")
    policies = ClientPolicies.from_config(first, clock, families=MetricFamilies(CollectorRegistry()))
    a = BaseServiceClient(first, policies=policies)
    b = BaseServiceClient(_config(upstream, transport, api_key="key-bbbbbbbb"), policies=policies)
    try:
        for _ in range(2):
            assert await a.get("public") == {"key": "key-aaaaaaaa"}
            assert await b.get("public") == {"key": "key-bbbbbbbb"}
    finally:
        await a.close()
        await b.close()
    assert upstream.hits["public"] == 2
