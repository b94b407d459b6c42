"""The factory path: shared clients use the container's singletons and are closed by the factory."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
import threading

import pytest

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    ClientClosedError,
    ClientConfig,
    MLWorkbenchClient,
)
from app.containers import Container
from app.factory import (
    close_factory_clients,
    get_analysis_engine_client,
    get_client,
    get_ml_workbench_client,
    register_client_config,
    use_container,
)
from tests.support.upstream import Upstream, json

REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}

#: What an unclosed aiohttp session, connector or socket prints when it is collected
#: under ``-W error``, and what a loop closed with a task still pending logs.
LEAK_MARKERS = ("Unclosed", "unclosed", "ResourceWarning", "Exception ignored", "Task was destroyed")


@pytest.fixture
def container(monkeypatch) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    c = Container()
    use_container(c)
    return c


@pytest.fixture
async def analysis(upstream: Upstream, monkeypatch) -> Upstream:
    """A real upstream answering every Analysis Engine call with a regime, as the factory's target."""
    upstream.route("*", json(REGIME))
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    return upstream


async def test_factory_clients_share_the_container_singletons(container) -> None:
    """Both paths give the same breaker, bulkhead and retry policy."""
    client = get_analysis_engine_client()
    assert isinstance(client, AnalysisEngineClient)
    assert client is get_analysis_engine_client()
    assert client is get_client(AnalysisEngineClient, "analysis-engine-service")
    assert client.breaker is container.analysis_engine.breaker()
    assert client.bulkhead is container.analysis_engine.bulkhead()
    assert client.retry is container.analysis_engine.retry()
    ml = get_ml_workbench_client()
    assert isinstance(ml, MLWorkbenchClient)
    assert ml.breaker is container.ml_workbench.breaker()
    assert ml.breaker is not client.breaker


async def test_config_override_gives_a_separate_client(container) -> None:
    """A config_override makes a new, plain client with its own breaker and bulkhead."""
    shared = get_analysis_engine_client()
    async with get_analysis_engine_client({"max_retries": 0, "timeout_seconds": 0.5}) as custom:
        assert custom is not shared
        assert type(custom) is AnalysisEngineClient  # the caller's, closed like any other client
        assert custom.breaker is not shared.breaker
        assert custom.bulkhead is not shared.bulkhead
        assert custom.config.max_retries == 0
        assert custom.config.base_url == shared.config.base_url  # the rest from the service's config


def test_unknown_service_names_the_known_ones(container) -> None:
    """An unknown name is a KeyError listing the known services."""
    with pytest.raises(KeyError, match="analysis_engine, ml_workbench"):
        get_client(BaseServiceClient, "pricing")


async def test_registered_configs(container) -> None:
    """register_client_config adds a service, or re-points one of the container's."""
    register_client_config("pricing", {"base_url": "http://127.0.0.1:9100/", "service_name": "pricing"})
    pricing = get_client(BaseServiceClient, "pricing")
    assert pricing.config.service_name == "pricing"
    assert pricing is get_client(BaseServiceClient, "pricing")

    register_client_config(
        "analysis_engine",
        ClientConfig(base_url="http://127.0.0.1:9200/", service_name="analysis-engine-service"),
    )
    moved = get_analysis_engine_client()
    assert moved.config.base_url == "http://127.0.0.1:9200/"
    assert moved.breaker is container.analysis_engine.breaker()


def test_configured_upstreams_are_the_factorys_too(monkeypatch) -> None:
    """An upstream from APP_UPSTREAMS__<NAME>__* is served by name or service name, and listed when unknown."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_UPSTREAMS__INVENTORY__BASE_URL", "http://127.0.0.1:9400/")
    container = Container()
    use_container(container)
    client = get_client(BaseServiceClient, "inventory")
    assert client is get_client(BaseServiceClient, "inventory-service")
    assert client.breaker is container.upstreams()["inventory"].breaker()
    with pytest.raises(KeyError, match="analysis_engine, inventory, ml_workbench"):
        get_client(BaseServiceClient, "pricing")


def test_default_container_is_built_on_first_use(monkeypatch) -> None:
    """Without create_app, the factory builds a container from the environment."""
    monkeypatch.setenv("APP_ENV", "test")
    client = get_analysis_engine_client()
    assert client.config.timeout_seconds == 1.0  # from the test profile


async def test_closing_a_shared_client_leaves_it_working_for_everyone(analysis) -> None:
    """close(), close_sync(), async with and with on a shared client do not close it under its other users."""
    client = get_analysis_engine_client()
    async with client:
        assert (await client.detect_market_regime("EURUSD")).regime == "ranging"
    await client.close()
    client.close_sync()
    with client:
        pass
    assert client is get_analysis_engine_client()
    assert (await client.detect_market_regime("EURUSD")).regime == "ranging"
    assert analysis.hits["market-regime/EURUSD"] == 2


async def test_close_factory_clients_closes_them_and_the_next_get_makes_new_ones(analysis) -> None:
    """close_factory_clients() really closes the shared clients; old references refuse, new ones work."""
    old = get_analysis_engine_client()
    await old.detect_market_regime("EURUSD")
    await close_factory_clients()
    with pytest.raises(ClientClosedError):
        await old.detect_market_regime("EURUSD")
    new = get_analysis_engine_client()
    assert new is not old
    assert (await new.detect_market_regime("EURUSD")).regime == "ranging"
    await close_factory_clients()


async def test_a_shared_client_serves_one_live_loop(analysis) -> None:
    """Used on a second event loop while its own still runs, a shared client refuses with a clear error."""
    client = get_analysis_engine_client()
    await client.detect_market_regime("EURUSD")
    errors: list[BaseException] = []

    def other_loop() -> None:
        try:
            asyncio.run(client.detect_market_regime("EURUSD"))
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert len(errors) == 1
    assert "another event loop" in str(errors[0])
    assert "config_override" in str(errors[0])


# Each program runs in a fresh interpreter with warnings as errors, because unclosed
# sessions only show when they are collected: at the end of a loop or of the process.
FLOWS = {
    "shared client in asyncio.run, never closed by the caller": """
        import asyncio
        from app.factory import get_analysis_engine_client

        async def main():
            client = get_analysis_engine_client()
            print((await client.detect_market_regime("EURUSD")).regime)

        asyncio.run(main())
    """,
    "shared client taken at import time, used in asyncio.run": """
        import asyncio
        from app.factory import get_analysis_engine_client

        client = get_analysis_engine_client()

        async def main():
            print((await client.detect_market_regime("EURUSD")).regime)

        asyncio.run(main())
    """,
    "async with on the shared client while another task still uses it": """
        import asyncio
        from app.factory import get_analysis_engine_client

        async def brief_user():
            async with get_analysis_engine_client() as client:
                await client.detect_market_regime("EURUSD")

        async def long_user():
            await asyncio.sleep(0.05)
            return (await get_analysis_engine_client().detect_market_regime("EURUSD")).regime

        async def main():
            _, regime = await asyncio.gather(brief_user(), long_user())
            print(regime)

        asyncio.run(main())
    """,
    "shared client in two asyncio.run calls, one after the other": """
        import asyncio
        from app.factory import get_analysis_engine_client

        async def main():
            return (await get_analysis_engine_client().detect_market_regime("EURUSD")).regime

        asyncio.run(main())
        print(asyncio.run(main()))
    """,
    "shared client's sync twins, never closed": """
        from app.factory import get_analysis_engine_client

        print(get_analysis_engine_client().detect_market_regime_sync("EURUSD").regime)
    """,
    "shared client used sync, then async, on uvloop": """
        import uvloop
        from app.factory import get_analysis_engine_client

        get_analysis_engine_client().detect_market_regime_sync("EURUSD")

        async def main():
            print((await get_analysis_engine_client().detect_market_regime("EURUSD")).regime)

        uvloop.run(main())
    """,
    "a loop run and closed by hand, after close_factory_clients()": """
        import asyncio
        from app.factory import get_analysis_engine_client
        from app.factory import close_factory_clients

        loop = asyncio.new_event_loop()
        answer = loop.run_until_complete(get_analysis_engine_client().detect_market_regime("EURUSD"))
        loop.run_until_complete(close_factory_clients())
        loop.close()
        print(answer.regime)
    """,
    "config_override client closed by async with and by with": """
        import asyncio
        from app.factory import get_analysis_engine_client

        async def main():
            async with get_analysis_engine_client({"max_retries": 0}) as client:
                await client.detect_market_regime("EURUSD")

        asyncio.run(main())
        with get_analysis_engine_client({"max_retries": 0}) as client:
            print(client.detect_market_regime_sync("EURUSD").regime)
    """,
}

LEAKING = """
    import asyncio, gc
    from app.factory import get_analysis_engine_client

    async def main():
        client = get_analysis_engine_client({"max_retries": 0})  # the caller's, and not closed
        print((await client.detect_market_regime("EURUSD")).regime)

    asyncio.run(main())
    gc.collect()
"""


async def run_program(source: str, upstream: Upstream) -> tuple[int, str, str]:
    """Run ``source`` in a fresh interpreter with ``-W error``, against ``upstream``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(APP_ENV="test", APP_ANALYSIS_ENGINE__BASE_URL=upstream.base_url)
    program = textwrap.dedent(source) + "\nimport gc\ngc.collect()\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-W", "error", "-c", program, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("flow", list(FLOWS))
async def test_no_unclosed_session_in_any_factory_flow(analysis, flow) -> None:
    """Each way of using the factory exits 0 with no unclosed-session, connector or socket warning."""
    code, out, err = await run_program(FLOWS[flow], analysis)
    assert code == 0, err
    assert out.strip().endswith("ranging")
    leaks = [m for m in LEAK_MARKERS if m in err]
    assert leaks == [], err


async def test_the_leak_check_sees_a_caller_client_left_open(analysis) -> None:
    """The flows' check is not vacuous: a config_override client the caller never closes is reported."""
    code, out, err = await run_program(LEAKING, analysis)
    assert code == 0
    assert out.strip() == "ranging"
    # aiohttp reports the session or its connector, whichever the collector reaches first.
    assert re.search(r"Unclosed (client session|connector)", err), err
