"""Two gateway replicas sharing a launcher-started Redis: the README's REPLICAS=2 walkthrough, as processes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from launcher.redis import INSTALL_HINT, redis_answers, redis_binary
from tests.e2e.conftest import start_platform
from tests.support.browser import browser, chromium_path

pytestmark = pytest.mark.skipif(redis_binary() is None, reason=f"redis-server not installed: {INSTALL_HINT}")

DEPENDENCY = "analysis-engine-service"
#: The walkthrough's global limit: the Analysis Engine's calls, over both replicas together.
RATE, BURST = 10, 2


@dataclass
class Replicas:
    gateways: list[str]
    analysis: str
    redis_port: int


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[Replicas]:
    """``make run REPLICAS=2`` with the walkthrough's settings: quorum 1 and a global limit."""
    running, services, _ = start_platform(
        tmp_path_factory.mktemp("replica-logs"),
        profile="test",
        ae_replicas=1,
        mlw_replicas=1,
        gateway_replicas=2,
        extra_env={
            "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED_QUORUM": "1",
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_PER_SECOND": str(RATE),
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_BURST": str(BURST),
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_MODE": "fail",
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_SCOPE": "global",
            # Other tests load this machine; at the default 20 ms a slow Redis answer
            # would put a replica on its local share for a moment, which is the
            # fallback's test, not this one's.
            "APP_SHARED_STATE__DEADLINE_SECONDS": "0.2",
        },
    )
    redis = next(s for s in services if s.probe == "redis")
    try:
        yield Replicas(
            gateways=[s.url for s in services if s.module == "app"],
            analysis=next(s.url for s in services if s.upstream) + "/api/v1",
            redis_port=redis.port,
        )
    finally:
        running.stop()
    # Redis stopped with the rest, last, and its no-persistence run left nothing behind.
    assert redis.process is not None
    assert redis.process.poll() is not None
    assert not redis_answers(redis.port)
    assert not services.run_dir.exists()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def shared_state(http: aiohttp.ClientSession, gateway: str) -> dict:
    async with http.get(f"{gateway}/api/v1/resilience") as resp:
        return (await resp.json())["dependencies"][DEPENDENCY]


async def settle(http: aiohttp.ClientSession, replicas: Replicas) -> None:
    """Chaos off, both breakers reset (fleet-wide), and each replica seeing the other."""
    async with http.delete(f"{replicas.analysis}/chaos"):
        pass
    async with http.post(f"{replicas.gateways[0]}/api/v1/resilience/{DEPENDENCY}/reset") as resp:
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [await shared_state(http, g) for g in replicas.gateways]
        if all(s["shared_state"]["replicas"] == 2 and s["breaker"]["state"] == "closed" for s in states):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"replicas did not settle: {states}")


async def requests_seen(http: aiohttp.ClientSession, analysis: str) -> int:
    async with http.get(f"{analysis}/chaos") as resp:
        return int((await resp.json())["stats"]["requests"])


async def test_both_replicas_share_one_redis_that_the_launcher_started(http, replicas) -> None:
    """Each replica reports Redis ok, the other replica, the shared breaker and the global limit."""
    await settle(http, replicas)
    for gateway in replicas.gateways:
        shared = (await shared_state(http, gateway))["shared_state"]
        assert shared["degraded"] is False
        assert shared["replicas"] == 2
        assert shared["redis"] == f"redis://127.0.0.1:{replicas.redis_port}/0"
        assert shared["rate_limit"] == "global"
        assert shared["breaker"]["quorum"] == 1


async def test_one_replicas_breaker_opens_the_others(http, replicas) -> None:
    """Quorum 1: the first replica's breaker opens on the broken engine; the second, never called, follows."""
    await settle(http, replicas)
    first, second = replicas.gateways
    async with http.put(f"{replicas.analysis}/chaos", json={"error_rate": 1.0, "error_status": 503}) as resp:
        assert resp.status == 200
    # Calls until it opens: the global limit (10/s) refuses some attempts, and a refusal is
    # not the engine failing, so it takes a few more than the threshold's three.
    for _ in range(20):
        async with http.get(f"{first}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 503
        if (await shared_state(http, first))["breaker"]["state"] == "open":
            break
        await asyncio.sleep(0.1)
    assert (await shared_state(http, first))["breaker"]["state"] == "open"
    for _ in range(100):  # 2 s: the open lease, published, then heard
        if (await shared_state(http, second))["breaker"]["state"] == "open":
            break
        await asyncio.sleep(0.02)
    assert (await shared_state(http, second))["breaker"]["state"] == "open"
    before = await requests_seen(http, replicas.analysis)
    started = time.monotonic()
    async with http.get(f"{second}/api/v1/regime/EURUSD") as resp:
        body = await resp.json()
    assert time.monotonic() - started < 0.1  # failed fast
    assert resp.status == 503
    assert body["error"] == "CircuitBreakerOpenError"
    assert await requests_seen(http, replicas.analysis) == before  # the second sent nothing


async def test_the_global_limit_holds_across_both_replicas(http, replicas) -> None:
    """Callers on both replicas for 2 s: the engine sees the one limit (10/s), not 10/s per replica."""
    await settle(http, replicas)
    # A 1 ms delay: a chaos setting, so the engine counts every request it gets, from 0.
    async with http.put(f"{replicas.analysis}/chaos", json={"latency_ms": 1}) as resp:
        assert resp.status == 200
    seconds = 2.0
    codes: Counter[int] = Counter()
    errors: Counter[str] = Counter()

    async def caller(gateway: str) -> None:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            async with http.get(f"{gateway}/api/v1/regime/EURUSD") as resp:
                body = await resp.json()
                codes[resp.status] += 1
                if resp.status != 200:
                    errors[body["error"]] += 1
            await asyncio.sleep(0.01)

    started = time.monotonic()
    await asyncio.gather(*(caller(g) for g in replicas.gateways for _ in range(2)))
    elapsed = time.monotonic() - started
    admitted = await requests_seen(http, replicas.analysis)
    # The limit, its burst, and 2 for a call admitted at each edge of the window.
    assert admitted <= RATE * elapsed + BURST + 2, (admitted, elapsed, codes)
    assert admitted >= RATE * seconds * 0.6, (admitted, codes)  # and it admits what it may
    assert codes[200] == admitted
    # The rest refused at once, typed: the gateway's 503 (the limit is the gateway's own
    # towards its upstream, not one the caller broke) with the rate limiter's error.
    assert codes[503] > 0, codes
    assert set(codes) <= {200, 503}, codes
    assert set(errors) == {"RateLimitedError"}, errors


@pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed (`make browser` installs it)")
async def test_the_dashboard_shows_the_shared_state(http, replicas) -> None:
    """The second replica's dashboard: Redis ok, 2 replicas, the global limit, the shared breaker."""
    await settle(http, replicas)
    async with browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{replicas.gateways[1]}/dashboard")
        line = page.locator(f'[data-dependency="{DEPENDENCY}"] [data-role="shared-state"]')
        await line.wait_for(timeout=5000)
        text = await line.inner_text()
        version = await page.locator('[data-role="config-version"]').inner_text()
    assert "Redis ok" in text
    assert "2 replicas" in text
    assert "global rate limit" in text
    assert "breaker shared · 0 open of 1 to open" in text
    assert version == "v1"  # the settings' version in force, in the header


async def test_each_replicas_config_version_is_seen_by_the_others(http, replicas) -> None:
    """The config API of either replica lists both, each with its version and the file's digest."""
    await settle(http, replicas)
    for _ in range(100):  # a heartbeat (every lease / 3) carries each replica's version
        async with http.get(f"{replicas.gateways[1]}/api/v1/config") as resp:
            body = await resp.json()
        if len(body["replicas"]) == 2:
            break
        await asyncio.sleep(0.05)
    seen = list(body["replicas"].values())
    assert len(seen) == 2, body["replicas"]
    assert [r["version"] for r in seen] == [1, 1]
    assert seen[0]["digest"] == seen[1]["digest"] == body["digest"]  # the same file on both


async def test_isolate_on_one_replica_holds_both_and_reset_on_the_other_closes_both(http, replicas) -> None:
    """The admin commands are the fleet's: said to one process, done by every one."""
    await settle(http, replicas)
    first, second = replicas.gateways
    async with http.post(f"{first}/api/v1/resilience/{DEPENDENCY}/isolate") as resp:
        assert resp.status == 200
        assert (await resp.json())["scope"] == "fleet"
    for _ in range(100):
        if (await shared_state(http, second))["breaker"]["isolated"]:
            break
        await asyncio.sleep(0.02)
    assert (await shared_state(http, second))["breaker"]["isolated"] is True
    async with http.get(f"{second}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "CircuitBreakerOpenError"
    async with http.post(f"{second}/api/v1/resilience/{DEPENDENCY}/reset") as resp:
        assert (await resp.json())["scope"] == "fleet"
    for _ in range(100):
        if (await shared_state(http, first))["breaker"]["state"] == "closed":
            break
        await asyncio.sleep(0.02)
    breaker = (await shared_state(http, first))["breaker"]
    assert (breaker["state"], breaker["isolated"]) == ("closed", False)
    async with http.get(f"{first}/api/v1/regime/EURUSD") as resp:
        assert resp.status in (200, 503)  # closed: it calls (the global limit may refuse it)
        assert (await resp.json()).get("error") != "CircuitBreakerOpenError"
