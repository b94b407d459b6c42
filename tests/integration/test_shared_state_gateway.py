"""Two gateway replicas sharing one Redis: a global rate limit holds across both, and Redis going away costs nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from app.containers import Container
from app.main import create_app
from settings import load_settings
from tests.support.asgi import serve
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, json

REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}


@pytest.fixture
def redis_server(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path)
    server.start()
    yield server  # type: ignore[misc]
    server.kill()


def replica(monkeypatch: pytest.MonkeyPatch, upstream: Upstream, redis_url: str) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_REDIS_URL", redis_url)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_PER_SECOND", "20")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_BURST", "2")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_MODE", "fail")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_SCOPE", "global")
    container = Container()
    container.settings.override(load_settings())
    return container


async def test_two_replicas_hold_one_global_limit(
    monkeypatch: pytest.MonkeyPatch, upstream: Upstream, redis_server: RedisServer
) -> None:
    upstream.route("market-regime/EURUSD", json(REGIME))
    a = create_app(replica(monkeypatch, upstream, redis_server.url))
    b = create_app(replica(monkeypatch, upstream, redis_server.url))
    seconds = 1.5
    codes: list[int] = []
    async with serve(a) as url_a, serve(b) as url_b, aiohttp.ClientSession() as http:

        async def hammer(base: str) -> None:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
                    codes.append(resp.status)
                await asyncio.sleep(0.005)

        started = time.monotonic()
        await asyncio.gather(hammer(url_a), hammer(url_b), hammer(url_a), hammer(url_b))
        elapsed = time.monotonic() - started
        async with http.get(f"{url_a}/api/v1/resilience") as resp:
            status = (await resp.json())["dependencies"]["analysis-engine-service"]
    admitted = upstream.hits["market-regime/EURUSD"]
    # 20/s over both replicas, burst 2: per-replica limits would let about twice through.
    assert admitted <= 20 * elapsed + 2 + 3, (admitted, elapsed)
    assert admitted >= 20 * seconds * 0.7, admitted
    assert 429 in codes or 503 in codes  # the rest were refused, typed
    shared = status["shared_state"]
    assert shared["rate_limit"] == "global"
    assert shared["degraded"] is False
    assert shared["replicas"] == 2


async def test_a_replica_starts_and_serves_with_redis_down(
    monkeypatch: pytest.MonkeyPatch, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.route("market-regime/EURUSD", json(REGIME))
    dead = RedisServer(tmp_path)  # never started: nothing listens on its port
    app = create_app(replica(monkeypatch, upstream, dead.url))
    async with serve(app) as base, aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 200  # the local share of the limit admits it
        assert time.monotonic() - started < 1.0
        async with http.get(f"{base}/api/v1/resilience") as resp:
            shared = (await resp.json())["dependencies"]["analysis-engine-service"]["shared_state"]
    assert shared["degraded"] is True


async def test_the_admin_isolate_holds_every_replica_open(
    monkeypatch: pytest.MonkeyPatch, upstream: Upstream, redis_server: RedisServer
) -> None:
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED", "true")
    a_container = replica(monkeypatch, upstream, redis_server.url)
    b_container = replica(monkeypatch, upstream, redis_server.url)
    async with (
        serve(create_app(a_container)) as url_a,
        serve(create_app(b_container)) as url_b,
        aiohttp.ClientSession() as http,
    ):
        await asyncio.sleep(0.2)  # both listening
        async with http.post(f"{url_a}/api/v1/resilience/analysis-engine-service/isolate") as resp:
            assert resp.status == 200
            assert (await resp.json())["scope"] == "fleet"
        b_breaker = b_container.analysis_engine.breaker()
        ends = time.monotonic() + 3
        while not b_breaker.isolated:
            assert time.monotonic() < ends, "replica B was not isolated"
            await asyncio.sleep(0.02)
        async with http.get(f"{url_b}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 503  # B fails fast too
        async with http.post(f"{url_b}/api/v1/resilience/analysis-engine-service/reset") as resp:
            assert (await resp.json())["scope"] == "fleet"
        a_breaker = a_container.analysis_engine.breaker()
        ends = time.monotonic() + 3
        while a_breaker.state_name != "closed":
            assert time.monotonic() < ends, "replica A was not reset"
            await asyncio.sleep(0.02)
        async with http.get(f"{url_a}/api/v1/resilience") as resp:
            shared = (await resp.json())["dependencies"]["analysis-engine-service"]["shared_state"]
        assert shared["breaker"]["quorum"] == 2
