"""A gateway with shared state and Redis down: it starts, serves on its local share, and says so.

Replicas sharing a Redis are separate processes in tests/e2e/test_replicas.py and
tests/integration/test_shared_breaker_probe.py: two apps in one process would share the
route wiring (the last app's container serves every URL), so they could not tell a
global limit from a local one.
"""

from __future__ import annotations

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
