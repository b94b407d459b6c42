"""The test mode users call: a fake clock, fast settings, and a client overridden for a block."""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

import pytest
from pydantic import ValidationError

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    CircuitBreakerOpenError,
    ClientConfig,
    ServerError,
)
from app.clients.testing import FAST_TEST_OVERRIDES, FakeClock, fast_config, fast_env, override_client
from app.containers import Container
from app.factory import get_analysis_engine_client, use_container
from settings import load_settings
from tests.support.upstream import Upstream, json, sequence

REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}


@pytest.fixture
def container(monkeypatch) -> Container:
    for name in list(os.environ):
        if name.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "test")
    c = Container()
    use_container(c)
    return c


# -- FakeClock ----------------------------------------------------------------------------


async def test_fake_clock_moves_only_when_told() -> None:
    """now() is what the test set; advance() moves it; sleep() moves it by the wait and records it."""
    clock = FakeClock(start=50.0)
    assert clock.now() == 50.0
    clock.advance(2.5)
    assert clock.now() == 52.5
    started = time.monotonic()
    await clock.sleep(3600)
    assert time.monotonic() - started < 1.0  # an hour of fake time, no real wait
    assert (clock.now(), clock.sleeps) == (3652.5, [3600])


async def test_a_client_on_the_fake_clock_retries_without_waiting(upstream: Upstream) -> None:
    """Backoff runs on the fake clock: the waits are recorded, exact (no jitter), and take no real time."""
    error = json({"detail": "busy", "code": "unavailable"}, status=503)
    upstream.route("market-regime/EURUSD", sequence(error, error, error, json(REGIME)))
    clock = FakeClock()
    config = fast_config(upstream.base_url, retry_base_delay=1.0, retry_max_delay=30.0)
    started = time.monotonic()
    async with AnalysisEngineClient(config, clock=clock) as client:
        assert (await client.detect_market_regime("EURUSD")).regime == "ranging"
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert time.monotonic() - started < 2.0
    assert upstream.hits["market-regime/EURUSD"] == 4


async def test_the_fake_clock_opens_and_half_opens_the_breaker(upstream: Upstream) -> None:
    """Failures open the breaker; advancing the clock past its reset timeout lets a trial through."""
    upstream.route("*", json({"detail": "down", "code": "unavailable"}, status=503))
    clock = FakeClock()
    config = fast_config(upstream.base_url, max_retries=0, circuit_breaker_failure_threshold=2)
    async with BaseServiceClient(config, clock=clock) as client:
        for _ in range(2):
            with pytest.raises(ServerError):
                await client.get("ping")
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("ping")
        assert upstream.hits["ping"] == 2
        upstream.route("*", json({"ok": True}))
        clock.advance(FAST_TEST_OVERRIDES["circuit_breaker_reset_timeout_seconds"])
        assert await client.get("ping") == {"ok": True}
        assert client.breaker.state_name == "closed"


# -- fast settings ------------------------------------------------------------------------


def test_fast_config_is_the_defaults_made_quick() -> None:
    """Fast waits, no jitter, a short break; thresholds and counts stay ClientConfig's."""
    config = fast_config("http://127.0.0.1:9/", service_name="pricing-service", max_retries=1)
    for field, value in FAST_TEST_OVERRIDES.items():
        assert getattr(config, field) == value
    assert (config.service_name, config.max_retries) == ("pricing-service", 1)
    seed = ClientConfig(base_url="http://127.0.0.1:9/")
    assert config.circuit_breaker_failure_threshold == seed.circuit_breaker_failure_threshold
    with pytest.raises(ValidationError, match="timeout_seconds"):
        fast_config("http://127.0.0.1:9/", timeout_seconds=-1)


async def test_fast_config_retries_a_real_failing_upstream_in_milliseconds(upstream: Upstream) -> None:
    """On the real clock: four attempts at a 503 take a few milliseconds of backoff, not seconds."""
    upstream.route("*", json({"detail": "busy", "code": "unavailable"}, status=503))
    started = time.monotonic()
    async with BaseServiceClient(fast_config(upstream.base_url)) as client:
        with pytest.raises(ServerError) as info:
            await client.get("ping")
    assert info.value.attempts == 4
    assert time.monotonic() - started < 1.0


def test_fast_env_is_the_same_as_settings_variables(monkeypatch) -> None:
    """fast_env("pricing", url): the variables that register "pricing" with the fast settings."""
    for name in list(os.environ):
        if name.startswith("APP_"):
            monkeypatch.delenv(name)
    env = fast_env("pricing", "http://127.0.0.1:9/pricing")
    assert env["APP_UPSTREAMS__PRICING__RETRY_JITTER"] == "false"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pricing = load_settings("test").upstreams["pricing"]
    assert pricing == fast_config("http://127.0.0.1:9/pricing", service_name="pricing-service")


# -- override_client ----------------------------------------------------------------------


async def provided(value: Any) -> Any:
    """What a provider gave: an async Resource in async mode hands out an awaitable, else the object."""
    return await value if inspect.isawaitable(value) else value


class FakeEngine:
    """Stands in for the Analysis Engine client."""

    service_name = "analysis-engine-service"

    async def detect_market_regime(self, symbol: str) -> dict[str, str]:
        return {"symbol": symbol, "regime": "fake"}


async def test_override_client_lasts_for_the_block(container) -> None:
    """Inside: the container and the factory hand out the fake. After: the real client again."""
    fake = FakeEngine()
    with override_client(container, "analysis_engine", fake) as given:
        assert given is fake
        assert await provided(container.analysis_engine.client()) is fake
        assert await provided(container.upstreams()["analysis_engine"].client()) is fake
        assert get_analysis_engine_client() is fake
    assert not container.analysis_engine.client.overridden
    assert isinstance(get_analysis_engine_client(), AnalysisEngineClient)


async def test_overrides_nest(container) -> None:
    """An inner override wins inside its block; the outer one is back after it."""
    outer, inner = FakeEngine(), FakeEngine()
    with override_client(container, "analysis_engine", outer):
        with override_client(container, "analysis_engine", inner):
            assert await provided(container.analysis_engine.client()) is inner
        assert await provided(container.analysis_engine.client()) is outer
    assert not container.analysis_engine.client.overridden


def test_override_client_names_the_configured_upstreams(container) -> None:
    """An unknown name is a KeyError listing what is configured."""
    with (
        pytest.raises(KeyError, match="'pricing'; configured: analysis_engine, ml_workbench"),
        override_client(container, "pricing", FakeEngine()),
    ):
        pass
