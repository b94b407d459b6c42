"""End to end: the gateway and both reference upstreams as real processes, broken on purpose."""

from __future__ import annotations

import asyncio
import time

import pytest

from upstreams.analysis_engine.indicators import rsi, sma
from upstreams.analysis_engine.prices import candles


async def chaos(http, base: str, **config) -> None:
    async with http.put(f"{base}/chaos", json=config) as resp:
        assert resp.status == 200, await resp.text()


async def chaos_stats(http, base: str) -> dict:
    async with http.get(f"{base}/chaos") as resp:
        return (await resp.json())["stats"]


async def test_happy_path_signal(http, clean) -> None:
    """A signal with indicators, regime and a prediction from the real services."""
    async with http.get(f"{clean.gateway}/api/v1/signals/EURUSD?timeframe=1h") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["degraded"] == []
    assert body["prediction"]["model_id"] == "direction-logreg-v1"
    assert body["regime"]["regime"] in {"trending_up", "trending_down", "ranging", "volatile"}
    assert body["action"] in {"buy", "sell", "hold"}
    expected_rsi = rsi(candles("EURUSD", "1h").tail(200).close, 14)[-1]
    assert body["indicators"]["RSI_14"] == pytest.approx(expected_rsi, abs=1e-9)


async def test_happy_path_indicator_values(http, clean) -> None:
    """Indicator values through the gateway equal the reference computation."""
    url = f"{clean.gateway}/api/v1/indicators/USDJPY?timeframe=4h&indicators=SMA:10,RSI:14&limit=50"
    async with http.get(url) as resp:
        body = await resp.json()
    assert resp.status == 200
    c = candles("USDJPY", "4h").tail(50)
    sma_result, rsi_result = body["results"]
    assert sma_result["values"] == pytest.approx(sma(c.close, 10), abs=1e-9, nan_ok=False) or all(
        a == b for a, b in zip(sma_result["values"], sma(c.close, 10), strict=True)
    )
    assert [v is None for v in rsi_result["values"]] == [v is None for v in rsi(c.close, 14)]
    assert sma_result["timestamps"] == list(c.timestamps)


async def test_half_the_calls_failing_is_hidden_by_retries(http, clean) -> None:
    """A 50% error rate: retries hide most failures, and the gateway's log agrees with the upstream."""
    await chaos(http, clean.analysis, error_rate=0.5, seed=1234)
    since = clean.log_offset()
    statuses = []
    for _ in range(20):
        async with http.get(f"{clean.gateway}/api/v1/regime/GBPUSD") as resp:
            statuses.append(resp.status)
    stats = await chaos_stats(http, clean.analysis)
    assert statuses.count(200) >= 17
    await asyncio.sleep(0.2)  # let the gateway flush its log lines
    records = [r for r in clean.call_records(since) if r["endpoint"] == "market-regime/{symbol}"]
    assert len(records) == 20
    attempts = sum(r["attempts"] for r in records)
    successes = sum(r["outcome"] == "success" for r in records)
    assert successes == statuses.count(200)
    assert attempts == stats["requests"]
    assert attempts - successes == stats["errors_injected"]
    assert stats["errors_injected"] > 5  # the faults really happened


async def test_hard_fault_opens_the_breaker_then_it_recovers(http, clean) -> None:
    """Error rate 1.0: the breaker opens, later calls fail fast, and it closes once the fault is gone."""
    await chaos(http, clean.analysis, error_rate=1.0, error_status=503)
    for _ in range(3):
        async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 503
    async with http.get(f"{clean.gateway}/health/ready") as resp:
        ready = await resp.json()
    assert resp.status == 503
    assert ready["dependencies"]["analysis-engine-service"]["breaker"] == "open"
    before = (await chaos_stats(http, clean.analysis))["requests"]
    for _ in range(10):
        started = time.monotonic()
        async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
            body = await resp.json()
        assert time.monotonic() - started < 0.05
        assert resp.status == 503
        assert body["error"] == "CircuitBreakerOpenError"
        assert int(resp.headers["Retry-After"]) >= 1
    assert (await chaos_stats(http, clean.analysis))["requests"] == before  # nothing was sent

    async with http.delete(f"{clean.analysis}/chaos"):
        pass
    await asyncio.sleep(1.1)  # the test profile's reset timeout is 1 s
    async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 200
    async with http.get(f"{clean.gateway}/health/ready") as resp:
        ready = await resp.json()
    assert ready["dependencies"]["analysis-engine-service"]["breaker"] == "closed"


async def test_latency_over_the_attempt_timeout_is_a_504_within_the_deadline(http, clean) -> None:
    """Every attempt outlives the 1 s attempt timeout: 504 within the 3 s deadline + 100 ms."""
    await chaos(http, clean.analysis, latency_ms=1500)
    started = time.monotonic()
    async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
        body = await resp.json()
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert body["error"].endswith("ClientTimeoutError")
    assert elapsed <= 3.0 + 0.1


async def test_workbench_down_degrades_the_signal(http, clean) -> None:
    """ML Workbench failing: the signal is still 200, with prediction null, within its deadline."""
    await chaos(http, clean.workbench, error_rate=1.0, error_status=500)
    started = time.monotonic()
    async with http.get(f"{clean.gateway}/api/v1/signals/EURUSD") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["prediction"] is None
    assert body["degraded"] == ["ml-workbench-service"]
    assert body["regime"]["symbol"] == "EURUSD"
    assert time.monotonic() - started < 2.0 + 0.5


async def test_workbench_slow_degrades_within_its_deadline(http, clean) -> None:
    """ML Workbench too slow: degraded at its deadline, not hung."""
    await chaos(http, clean.workbench, latency_ms=5000)
    started = time.monotonic()
    async with http.get(f"{clean.gateway}/api/v1/signals/EURUSD") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["degraded"] == ["ml-workbench-service"]
    assert time.monotonic() - started < 2.0 + 0.5


async def test_dropped_connections_are_a_typed_error_not_a_hang(http, clean) -> None:
    """Connections dropped without a response: a 503 from the mapping, quickly."""
    await chaos(http, clean.analysis, drop_connection_rate=1.0)
    started = time.monotonic()
    async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
        body = await resp.json()
    assert resp.status == 503
    assert body["error"].endswith("ClientConnectionError")
    assert time.monotonic() - started < 1.0


async def test_admin_reset_ends_an_outage_at_once_and_isolate_holds_it(http, clean) -> None:
    """The walkthrough: the engine broken, then fixed; a reset closes the breaker without the wait.

    Isolate does the opposite: calls fail fast with the upstream healthy, until a reset.
    """
    await chaos(http, clean.analysis, error_rate=1.0, error_status=503)
    for _ in range(3):
        async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 503
    async with http.delete(f"{clean.analysis}/chaos"):
        pass
    async with http.post(f"{clean.gateway}/api/v1/resilience/analysis-engine-service/reset") as resp:
        assert resp.status == 200
        assert (await resp.json())["breaker"] == "closed"
    async with http.get(f"{clean.gateway}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 200  # at once: no reset timeout to wait out

    async with http.post(f"{clean.gateway}/api/v1/resilience/ml-workbench-service/isolate") as resp:
        assert resp.status == 200
    before = (await chaos_stats(http, clean.workbench))["requests"]
    async with http.get(f"{clean.gateway}/api/v1/signals/EURUSD") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["degraded"] == ["ml-workbench-service"]
    assert (await chaos_stats(http, clean.workbench))["requests"] == before  # nothing was sent
    async with http.get(f"{clean.gateway}/health/ready") as resp:
        ready = await resp.json()
    assert resp.status == 200  # the ML Workbench is degradable
    assert ready["status"] == "degraded"
