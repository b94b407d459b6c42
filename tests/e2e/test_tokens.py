"""`make run`'s credentials as processes: the token service, JWT-only upstreams, the gateway refreshing and recovering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.e2e.conftest import start_platform

#: Short tokens, so a refresh ahead of expiry (at 80% of it, less jitter) comes within the test.
TTL_SECONDS = 4


@dataclass
class Tokens:
    gateway: str
    analysis: str
    auth: str


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Iterator[Tokens]:
    """The local profile's platform (the one with the token service), one instance of each upstream."""
    logs = tmp_path_factory.mktemp("token-logs")
    running, _, ports = start_platform(
        logs,
        ports=4,
        profile="local",
        ae_replicas=1,
        mlw_replicas=1,
        extra_env={"AUTH_TOKEN_TTL_SECONDS": str(TTL_SECONDS), "APP_LOG_JSON": "true"},
    )
    try:
        yield Tokens(
            gateway=f"http://127.0.0.1:{ports[0]}",
            analysis=f"http://127.0.0.1:{ports[1]}/api/v1",
            auth=f"http://127.0.0.1:{ports[3]}",
        )
    finally:
        running.stop()
    # No token and no client secret in any process's log.
    text = "".join(p.read_text(errors="replace") for p in logs.iterdir())
    assert "local-gateway-secret" not in text
    assert "eyJ" not in text  # the start of every JWT


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def issued(http: aiohttp.ClientSession, tokens: Tokens) -> int:
    async with http.get(f"{tokens.auth}/oauth/stats") as resp:
        return int((await resp.json())["clients"]["gateway"]["issued"])


async def test_the_upstream_takes_only_tokens_and_the_gateway_gets_and_refreshes_them(http, tokens) -> None:
    async with http.get(f"{tokens.analysis}/market-regime/EURUSD") as resp:
        assert resp.status == 401  # no token, no answer
    async with http.get(f"{tokens.gateway}/api/v1/signals/EURUSD") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["degraded"] == []  # both upstreams answered: a token for each audience
    first = await issued(http, tokens)
    assert first == 2
    # Calls for a bit more than one token's life: each token is refreshed ahead of its
    # expiry (in the background), and no call fails or waits on the token service.
    statuses = []
    for _ in range(int(TTL_SECONDS / 0.25) + 4):
        async with http.get(f"{tokens.gateway}/api/v1/regime/EURUSD") as resp:
            statuses.append(resp.status)
        await asyncio.sleep(0.25)
    assert set(statuses) == {200}
    assert await issued(http, tokens) > first


async def test_100_calls_meeting_a_revoked_token_cause_one_refresh_and_all_succeed(http, tokens) -> None:
    async with http.get(f"{tokens.gateway}/api/v1/regime/EURUSD") as resp:
        assert resp.status == 200  # a token in hand
    async with http.post(f"{tokens.analysis}/chaos/revoke-tokens") as resp:
        assert resp.status == 200
    before = await issued(http, tokens)

    async def call() -> int:
        async with http.get(f"{tokens.gateway}/api/v1/regime/EURUSD") as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(call() for _ in range(100)))
    assert statuses == [200] * 100
    # One refresh for the revoked token (a refresh ahead of expiry may fall in the same
    # moment: at most one more).
    assert 1 <= await issued(http, tokens) - before <= 2
    async with http.get(f"{tokens.gateway}/api/v1/resilience") as resp:
        breaker = (await resp.json())["dependencies"]["analysis-engine-service"]["breaker"]
    assert breaker["state"] == "closed"
