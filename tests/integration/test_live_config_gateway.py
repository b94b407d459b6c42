"""The gateway reloading its config file while it serves: the same clients, new values, nothing lost."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import uvicorn

from app.clients import ClientClosedError
from app.containers import Container
from app.factory import get_analysis_engine_client
from app.main import create_app
from app.serving import CANCEL_AFTER_CLOSE_SECONDS, GatewayServer
from tests.support.asgi import serve
from tests.support.upstream import Upstream, json

REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}


def config_text(upstream: Upstream, **extra: str) -> str:
    lines = {
        "APP_LOG_JSON": "true",
        "APP_LIVE_CONFIG": "watch",
        "APP_ANALYSIS_ENGINE__BASE_URL": upstream.base_url,
        "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS": "1.0",
        "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD": "10",
        "APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS": "3.0",
        "APP_ML_WORKBENCH__BASE_URL": upstream.base_url,
        "APP_ML_WORKBENCH__TOTAL_TIMEOUT_SECONDS": "2.0",
        "APP_ANALYSIS_ENGINE__API_KEY": "first-key-0123456789",
        # Room for an upstream a reload adds: the grace is the server's from its start.
        "APP_SHUTDOWN_GRACE_SECONDS": "30",
        **extra,
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def write(path: Path, text: str) -> None:
    """As an editor saving with a rename would: the reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: Upstream) -> Path:
    for name in list(os.environ):
        if name.startswith(("APP_ANALYSIS_ENGINE", "APP_ML_WORKBENCH", "APP_UPSTREAMS", "APP_LIVE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "test")
    path = tmp_path / "gateway.env"
    path.write_text(config_text(upstream), encoding="utf-8")
    monkeypatch.setenv("APP_CONFIG_FILE", str(path))
    return path


@pytest.fixture
async def gateway(config_file: Path) -> AsyncIterator[tuple[str, Container, aiohttp.ClientSession]]:
    container = Container()
    # No connection limit of the test's own (aiohttp's default is 100 at once).
    connector = aiohttp.TCPConnector(limit=0)
    async with serve(create_app(container)) as url, aiohttp.ClientSession(connector=connector) as http:
        yield url, container, http


async def config_of(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/api/v1/config") as resp:
        assert resp.status == 200
        return await resp.json()


async def until_version(
    http: aiohttp.ClientSession,
    url: str,
    version: int,
    *,
    result: str | None = None,
    after: dict | None = None,
) -> dict:
    """The config API once it shows ``version`` and a last reload of ``result`` other than ``after``'s; 5 s at most."""
    for _ in range(250):
        body = await config_of(http, url)
        last = body["last_reload"]
        if (
            body["version"] == version
            and (result is None or (last and last["result"] == result))
            and (after is None or last != after["last_reload"])
        ):
            return body
        await asyncio.sleep(0.02)
    pytest.fail(f"config never reached version {version} ({result}): {body}")


async def test_an_edit_applies_in_place_and_the_api_shows_the_new_version(
    upstream, config_file, gateway
) -> None:
    url, container, http = gateway
    upstream.route("market-regime/EURUSD", json(REGIME))
    client = await container.analysis_engine.client()
    policies = container.analysis_engine.policies()
    first = await config_of(http, url)
    assert first["version"] == 1
    assert first["source"] == str(config_file)
    async with http.get(f"{url}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 200

    write(
        config_file,
        config_text(
            upstream,
            APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="0.5",
            APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD="4",
        ),
    )
    body = await until_version(http, url, 2, result="applied")
    assert "upstreams.analysis_engine.timeout_seconds" in body["last_reload"]["message"]
    # The same client and policies, with the new values.
    assert await container.analysis_engine.client() is client
    assert container.analysis_engine.policies() is policies
    assert client.config.timeout_seconds == 0.5
    assert policies.config is not None
    assert policies.config.circuit_breaker_failure_threshold == 4
    async with http.get(f"{url}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 200
    async with http.get(f"{url}/api/v1/resilience") as resp:
        assert (await resp.json())["config"]["version"] == 2
    # No secret in the config API, old or new.
    async with http.get(f"{url}/api/v1/config") as resp:
        text = await resp.text()
    assert "first-key-0123456789" not in text


async def test_an_invalid_or_restart_only_edit_is_refused_and_the_old_version_stays(
    upstream, config_file, gateway
) -> None:
    url, container, http = gateway
    write(config_file, config_text(upstream, APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="soon"))
    body = await until_version(http, url, 1, result="invalid")
    message = body["last_reload"]["message"]
    assert "upstreams.analysis_engine.timeout_seconds" in message
    assert "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS" in message
    assert "soon" not in message  # the field and the reason, never the value

    write(config_file, config_text(upstream, APP_PORT="9999"))
    body = await until_version(http, url, 1, result="refused")
    assert "port (APP_PORT)" in body["last_reload"]["message"]
    assert "restart" in body["last_reload"]["message"]

    write(config_file, config_text(upstream, APP_ANALYSIS_ENGINE__SERVICE_NAME="renamed"))
    body = await until_version(http, url, 1, result="refused", after=body)
    assert "service_name" in body["last_reload"]["message"]
    write(config_file, config_text(upstream, APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS="60"))
    # The grace is set here, so the settings themselves refuse deadlines that outlast it.
    body = await until_version(http, url, 1, result="invalid", after=body)
    assert "shutdown_grace_seconds (APP_SHUTDOWN_GRACE_SECONDS) is 30 s" in body["last_reload"]["message"]
    client = await container.analysis_engine.client()
    assert client.config.timeout_seconds == 1.0  # nothing of the refused versions applied
    assert client.config.total_timeout_seconds == 3.0


async def test_an_upstream_added_by_a_reload_is_opened_and_a_removed_one_closed(
    upstream, config_file, gateway
) -> None:
    url, container, http = gateway
    upstream.route("quotes/EURUSD", json({"bid": 1.1}))
    write(
        config_file,
        config_text(
            upstream,
            APP_UPSTREAMS__PRICING__BASE_URL=upstream.base_url,
            APP_UPSTREAMS__PRICING__TOTAL_TIMEOUT_SECONDS="2.0",
        ),
    )
    await until_version(http, url, 2, result="applied")
    registry = container.upstreams()
    await registry.settled()
    assert "pricing" in registry
    async with http.get(f"{url}/api/v1/resilience") as resp:
        assert "pricing-service" in (await resp.json())["dependencies"]
    pricing = await registry["pricing"].client()
    assert await pricing.get("quotes/EURUSD") == {"bid": 1.1}

    write(config_file, config_text(upstream))
    await until_version(http, url, 3, result="applied")
    await registry.settled()
    assert "pricing" not in registry
    async with http.get(f"{url}/api/v1/resilience") as resp:
        assert "pricing-service" not in (await resp.json())["dependencies"]
    with pytest.raises(ClientClosedError):  # closed with its upstream, not left open
        await pricing.get("quotes/EURUSD")


async def test_sighup_without_a_change_reloads_nothing(upstream, config_file, gateway) -> None:
    url, _container, http = gateway
    os.kill(os.getpid(), signal.SIGHUP)
    body = await until_version(http, url, 1, result="unchanged")
    assert body["last_reload"]["reason"] == "SIGHUP"


async def test_an_edit_under_200_requests_in_flight_fails_none_and_keeps_the_breakers_state(
    upstream, config_file, gateway
) -> None:
    """The file changes a threshold, a timeout and a bulkhead size while 200 gateway requests wait on the engine."""
    url, container, http = gateway
    release = asyncio.Event()

    async def slow(request):  # type: ignore[no-untyped-def]
        await release.wait()
        return await json(REGIME)(request)

    upstream.route("market-regime/EURUSD", slow)
    # Attempts long enough to outlast the wait for the reload (the seed's default is 30 s).
    slow_enough = {
        "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS": "5.0",
        "APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS": "20",
    }
    write(config_file, config_text(upstream, **slow_enough))
    await until_version(http, url, 2, result="applied")
    # The ML Workbench's breaker is open (its own state, with its open-until), to see it survive.
    workbench = container.ml_workbench.breaker()
    workbench.open()
    # The opening itself (when and for how long), not the seconds left, which run down.
    opening = (workbench._engine.opened_at, workbench.open_for, workbench.openings)
    bulkhead = container.analysis_engine.bulkhead()

    async def call() -> int:
        async with http.get(f"{url}/api/v1/regime/EURUSD") as resp:
            await resp.read()
            return resp.status

    calls = [asyncio.create_task(call()) for _ in range(200)]
    for _ in range(250):
        if upstream.in_flight >= 100:  # the bulkhead's 100 in flight, the rest waiting in it
            break
        await asyncio.sleep(0.02)
    assert upstream.in_flight == 100
    write(
        config_file,
        config_text(
            upstream,
            **slow_enough,
            APP_ANALYSIS_ENGINE__BULKHEAD_MAX_CONCURRENT="150",
            APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD="3",
            APP_ML_WORKBENCH__CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
        ).replace("TIMEOUT_SECONDS=5.0", "TIMEOUT_SECONDS=4.0"),
    )
    await until_version(http, url, 3, result="applied")
    for _ in range(250):  # the larger bulkhead admits 50 of the waiting calls at once
        if upstream.in_flight >= 150:
            break
        await asyncio.sleep(0.02)
    assert upstream.in_flight == 150
    assert bulkhead.max_concurrent == 150
    release.set()
    assert await asyncio.gather(*calls) == [200] * 200  # none failed because of the reload
    assert workbench.state_name == "open"
    assert (
        workbench._engine.opened_at,
        workbench.open_for,
        workbench.openings,
    ) == opening  # the same opening
    client = await container.analysis_engine.client()
    assert client.config.timeout_seconds == 4.0
    assert container.analysis_engine.breaker().failure_threshold == 3


async def test_the_factorys_clients_and_the_shutdown_grace_follow_a_reload(
    upstream, config_file, gateway
) -> None:
    """A shared client made after a reload starts from it, and SIGTERM's grace covers the new deadlines."""
    url, container, http = gateway
    # As if it had started with a grace of 5 s (the longest request then, plus 1 s).
    # log_config=None: uvicorn would otherwise install its logging config in this process.
    server = GatewayServer(uvicorn.Config(lambda *_: None, log_config=None), container, grace=5.0)
    write(config_file, config_text(upstream, APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="0.7"))
    await until_version(http, url, 2, result="applied")
    shared = get_analysis_engine_client()  # the factory's, built after the reload
    assert shared.config.timeout_seconds == 0.7

    write(config_file, config_text(upstream, APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS="20"))
    await until_version(http, url, 3, result="applied")
    server._follow_reloads()  # what the first SIGTERM does
    assert server.grace == 30.0  # the grace of the settings in force, covering the new 20 s deadline
    assert server.config.timeout_graceful_shutdown == math.ceil(30.0 + CANCEL_AFTER_CLOSE_SECONDS)
