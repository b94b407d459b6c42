"""SIGTERM on a real gateway process with requests in flight: each gets its answer, the log is whole."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.api.payloads import INDICATORS, PREDICTION, REGIME
from tests.e2e.conftest import free_port
from tests.support.upstream import Upstream, delayed
from tests.support.upstream import json as json_handler

ROOT = Path(__file__).resolve().parents[2]
REGIME_PATH = "market-regime/EURUSD"


@dataclass
class Gateway:
    """A ``python -m app`` process and where its log goes."""

    process: asyncio.subprocess.Process
    url: str
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines() if line.startswith(b"{")]

    def call_lines(self) -> list[dict[str, Any]]:
        """One per upstream call: the client's INFO record."""
        return [r for r in self.lines() if r["logger"] == "app.clients" and r["level"] == "INFO"]


async def start_gateway(upstream: Upstream, log: Path, **env: str) -> Gateway:
    port = free_port()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_"))
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", cwd=ROOT, stdout=out, stderr=out,
            env={
                **base,
                "APP_ENV": "test",
                "APP_PORT": str(port),
                "APP_ANALYSIS_ENGINE__BASE_URL": upstream.base_url,
                "APP_ML_WORKBENCH__BASE_URL": upstream.base_url,
                **env,
            },
        )  # fmt: skip
    gateway = Gateway(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert process.returncode is None, "the gateway exited during start-up"
            try:
                async with http.get(f"{gateway.url}/health") as resp:
                    if resp.status == 200:
                        return gateway
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not answer /health within 30 s")


@pytest.fixture
async def gateways(tmp_path) -> AsyncIterator[list[Gateway]]:
    """Gateways a test started; any still running at the end is killed."""
    started: list[Gateway] = []
    yield started
    for gateway in started:
        if gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def sigterm_and_wait(gateway: Gateway, limit: float) -> float:
    """SIGTERM, then the seconds until the process exited (it must within ``limit``)."""
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(gateway.process.wait(), limit + 5)
    return time.monotonic() - started


def assert_clean_exit(gateway: Gateway, elapsed: float, grace: float) -> None:
    assert gateway.process.returncode == 0, gateway.log.read_text()[-3000:]
    assert elapsed <= grace
    assert "Traceback" not in gateway.log.read_text()
    assert not [r for r in gateway.lines() if r["level"] == "ERROR"]


async def test_in_flight_requests_get_their_answers(upstream, gateways, tmp_path) -> None:
    """Regimes and signals in flight at SIGTERM all answer 200; exit 0; one log line per call."""
    for path, body in (
        (REGIME_PATH, REGIME),
        ("indicators/calculate", INDICATORS),
        ("models/direction-logreg-v1/predict", PREDICTION),
    ):
        upstream.route(path, delayed(0.5 if "predict" in path else 1.0, json_handler(body)))  # fmt: skip
    grace = 5.0 + 2.0 + 1.0  # the longest request: both deadlines one after the other, plus 1 s
    gateways.append(
        gateway := await start_gateway(
            upstream, tmp_path / "gateway.log",
            APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="5", APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS="5",
        )
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        regimes = [asyncio.create_task(fetch(http, f"{gateway.url}/api/v1/regime/EURUSD")) for _ in range(6)]
        signals = [asyncio.create_task(fetch(http, f"{gateway.url}/api/v1/signals/EURUSD")) for _ in range(3)]
        await until(lambda: upstream.in_flight == 6 + 3 * 2)  # every engine call is waiting
        elapsed = await sigterm_and_wait(gateway, grace)
        answers = await asyncio.gather(*regimes, *signals)
    assert [status for status, _ in answers] == [200] * 9
    assert all(body == REGIME for _, body in answers[:6])
    # Each signal still got its prediction: the ML Workbench was called after the SIGTERM.
    assert all(body["prediction"] == PREDICTION and body["degraded"] == [] for _, body in answers[6:])
    assert_clean_exit(gateway, elapsed, grace)
    calls = gateway.call_lines()
    assert len(calls) == 6 + 3 * 3 == sum(upstream.hits.values())
    assert all(r["message"].endswith(" success") for r in calls)


async def test_requests_against_a_hung_upstream_end_at_their_deadline(upstream, gateways, tmp_path) -> None:
    """The upstream never answers: each request in flight gets its typed 504 at its deadline; exit 0."""
    upstream.route(REGIME_PATH, delayed(60, json_handler(REGIME)))
    grace = 1.0 + 2.0 + 1.0
    gateways.append(
        gateway := await start_gateway(
            upstream, tmp_path / "gateway.log",
            APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="1", APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS="1",
        )
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(fetch(http, f"{gateway.url}/api/v1/regime/EURUSD")) for _ in range(5)]
        await until(lambda: upstream.in_flight == 5)
        elapsed = await sigterm_and_wait(gateway, grace)
        answers = await asyncio.gather(*tasks)
    assert {status for status, _ in answers} == {504}
    assert {body["error"] for _, body in answers} == {"ClientTimeoutError"}
    assert elapsed < 1.0 + 1.0  # the deadline, not the grace, ended them
    assert_clean_exit(gateway, elapsed, grace)
    assert len(gateway.call_lines()) == 5


async def test_calls_outliving_the_grace_end_with_a_typed_503(upstream, gateways, tmp_path) -> None:
    """Calls queued in a bulkhead without a deadline: at the grace's end the clients close under them.

    One slot, no call deadline, a hung upstream: each call times out after 2 s, and the
    queued ones would wait their turn far past the grace. Those still in flight when it
    ends get ``ClientClosedError``'s 503, not a cancelled connection.
    """
    upstream.route(REGIME_PATH, delayed(60, json_handler(REGIME)))
    grace = 2.0 + 2.0 + 1.0
    gateways.append(
        gateway := await start_gateway(
            upstream, tmp_path / "gateway.log",
            APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS="2", APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS="null",
            APP_ANALYSIS_ENGINE__MAX_RETRIES="0", APP_ANALYSIS_ENGINE__BULKHEAD_MAX_CONCURRENT="1",
            APP_ANALYSIS_ENGINE__BULKHEAD_MAX_WAITING="10",
        )
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(fetch(http, f"{gateway.url}/api/v1/regime/EURUSD")) for _ in range(6)]
        await until(lambda: upstream.in_flight == 1)
        await asyncio.sleep(0.2)  # the other five are queued behind the one slot
        elapsed = await sigterm_and_wait(gateway, grace + 2)
        answers = await asyncio.gather(*tasks)
    statuses = [status for status, _ in answers]
    assert statuses.count(504) == 2  # two took their turn within the grace and timed out
    assert statuses.count(503) == 4
    assert {body["error"] for status, body in answers if status == 503} == {"ClientClosedError"}
    assert grace <= elapsed < grace + 2
    assert gateway.process.returncode == 0
    assert "Traceback" not in gateway.log.read_text()
    assert len(gateway.call_lines()) == 6  # the closed ones are logged too


async def test_an_open_status_stream_does_not_hold_the_shutdown(upstream, gateways, tmp_path) -> None:
    """A dashboard's SSE stream ends on SIGTERM, so an idle gateway exits at once, not after its grace."""
    gateways.append(gateway := await start_gateway(upstream, tmp_path / "gateway.log"))
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/api/v1/resilience/stream") as stream:
        assert (await stream.content.readline()).startswith(b"data: ")
        elapsed = await sigterm_and_wait(gateway, 6.0)
        rest = await stream.read()  # a stream cut mid-chunk would raise ClientPayloadError here
    assert elapsed < 2.5
    assert rest.endswith(b"\n")  # it ended after a whole event
    assert_clean_exit(gateway, elapsed, 6.0)
