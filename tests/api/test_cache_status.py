"""The response cache as the gateway shows it: the status API's "cache", the metrics, the dashboard's line."""

from __future__ import annotations

import aiohttp
import pytest

from app.containers import Container
from app.main import create_app
from settings import load_settings
from tests.api.payloads import REGIME
from tests.support.asgi import serve
from tests.support.upstream import Upstream
from tests.support.upstream import json as json_handler

pytestmark = pytest.mark.asyncio


async def test_the_status_api_metrics_and_dashboard_show_the_cache(monkeypatch, upstream: Upstream) -> None:
    """Two regime calls with the engine's cache on: one miss, one hit, seen in /api/v1/resilience and /metrics."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__CACHE_ENABLED", "true")
    upstream.route("market-regime/EURUSD", json_handler(REGIME, headers={"Cache-Control": "max-age=60"}))
    container = Container()
    container.settings.override(load_settings())
    async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
                assert resp.status == 200
        async with http.get(f"{base}/api/v1/resilience") as resp:
            status = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
        async with http.get(f"{base}/dashboard") as resp:
            page = await resp.text()
    assert upstream.hits["market-regime/EURUSD"] == 1
    cache = status["dependencies"]["analysis-engine-service"]["cache"]
    assert (cache["store"], cache["hits"], cache["misses"], cache["stored"]) == ("memory", 1, 1, 1)
    assert cache["entries"] == 1
    assert 0 < cache["bytes"] <= cache["max_bytes"]
    assert cache["hit_ratio"] == 0.5
    assert status["dependencies"]["ml-workbench-service"]["cache"] is None  # not switched on there
    assert (
        'service_client_cache_lookups_total{peer_service="analysis-engine-service",result="hit"} 1.0'
        in metrics
    )
    assert (
        'service_client_cache_lookups_total{peer_service="analysis-engine-service",result="miss"} 1.0'
        in metrics
    )
    assert 'data-role="cache"' in page  # the card's cache line, drawn from "cache" above
