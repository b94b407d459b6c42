"""Fault injection on the reference upstreams: errors, latency, dropped connections, off in production."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.support.asgi import serve
from upstreams.analysis_engine.service import AnalysisEngineSettings, create_app


async def chaos(http, base: str, **config) -> dict:
    async with http.put(f"{base}/chaos", json=config) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_put_get_delete(http, ae) -> None:
    """PUT sets the faults, GET reads them back with counters, DELETE clears them."""
    await chaos(http, ae, error_rate=0.5, error_status=502, seed=7)
    async with http.get(f"{ae}/chaos") as resp:
        state = await resp.json()
    assert state["config"]["error_rate"] == 0.5
    assert state["config"]["error_status"] == 502
    async with http.delete(f"{ae}/chaos") as resp:
        assert (await resp.json())["config"]["error_rate"] == 0.0


async def test_invalid_chaos_is_422(http, ae) -> None:
    """Out-of-range faults are refused with the field named."""
    async with http.put(f"{ae}/chaos", json={"error_rate": 2}) as resp:
        assert resp.status == 422
        assert "error_rate" in (await resp.json())["detail"]


async def test_error_rate_with_status_and_retry_after(http, ae) -> None:
    """Every call fails with the chosen status and Retry-After; health and chaos stay reachable."""
    await chaos(http, ae, error_rate=1.0, error_status=429, retry_after_seconds=3)
    async with http.get(f"{ae}/prices/EURUSD") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["code"] == "chaos"
    async with http.get(ae.removesuffix("/api/v1") + "/health") as resp:
        assert resp.status == 200
    async with http.get(f"{ae}/chaos") as resp:
        assert (await resp.json())["stats"]["errors_injected"] == 1


async def test_seeded_error_rate_is_reproducible(http, ae) -> None:
    """With a seed, a 50% error rate fails the same calls every time."""
    runs = []
    for _ in range(2):
        await chaos(http, ae, error_rate=0.5, seed=42)
        statuses = []
        for _ in range(20):
            async with http.get(f"{ae}/prices/EURUSD?limit=1") as resp:
                statuses.append(resp.status)
        runs.append(statuses)
    assert runs[0] == runs[1]
    assert 3 < runs[0].count(503) < 17


async def test_latency_with_jitter(http, ae) -> None:
    """Added latency is at least latency_ms and at most latency_ms + jitter."""
    await chaos(http, ae, latency_ms=150, latency_jitter_ms=50)
    started = time.monotonic()
    async with http.get(f"{ae}/prices/EURUSD?limit=1") as resp:
        assert resp.status == 200
    assert 0.15 <= time.monotonic() - started < 0.4


async def test_latency_past_the_callers_deadline_answers_504_just_after_the_deadline(http, ae) -> None:
    """With X-Request-Timeout-Ms shorter than the latency, a 504 just after the deadline (not the latency).

    After it, by the grace: a caller keeping its deadline reports its own timeout, never this answer.
    """
    await chaos(http, ae, latency_ms=1000)
    started = time.monotonic()
    async with http.get(f"{ae}/prices/EURUSD?limit=1", headers={"X-Request-Timeout-Ms": "200"}) as resp:
        assert resp.status == 504
    assert 0.25 <= time.monotonic() - started < 0.45


async def test_dropped_connection_sends_no_response(http, ae) -> None:
    """The socket closes with no status line: the client sees a disconnect, not an HTTP error."""
    await chaos(http, ae, drop_connection_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(f"{ae}/prices/EURUSD?limit=1"):
            pass
    async with http.get(f"{ae}/chaos") as resp:
        stats = (await resp.json())["stats"]
    # Plain aiohttp quietly resends an idempotent request once on a disconnect; both dropped.
    assert stats["connections_dropped"] == stats["requests"] == 2


async def test_chaos_is_off_in_production(http) -> None:
    """In production the chaos routes do not exist."""
    async with serve(create_app(AnalysisEngineSettings(app_env="production"))) as url:
        async with http.put(f"{url}/api/v1/chaos", json={"error_rate": 1}) as resp:
            assert resp.status == 404
        async with http.get(f"{url}/api/v1/prices/EURUSD?limit=1") as resp:
            assert resp.status == 200


async def test_delayed_post_keeps_its_body(http, ae) -> None:
    """Latency on a POST still hands the whole body to the handler."""
    await chaos(http, ae, latency_ms=50)
    req = {"symbol": "EURUSD", "indicators": [{"name": "SMA", "params": {"period": 2}}], "limit": 3}
    async with http.post(f"{ae}/indicators/calculate", json=req) as resp:
        assert resp.status == 200
        assert len((await resp.json())["results"][0]["values"]) == 3


async def test_a_caller_hanging_up_ends_the_injected_wait(http) -> None:
    """A client that gives up is not waited for: the server can shut down at once, not in 30 s."""
    server = serve(create_app(AnalysisEngineSettings(app_env="test")))
    url = await server.__aenter__()
    try:
        await chaos(http, f"{url}/api/v1", latency_ms=30_000)
        with pytest.raises(TimeoutError):
            async with http.get(f"{url}/api/v1/prices/EURUSD", timeout=aiohttp.ClientTimeout(total=0.2)):
                pass
    finally:
        started = time.monotonic()
        await server.__aexit__(None, None, None)
    assert time.monotonic() - started < 2
