"""OAuth2ClientCredentials against a real token endpoint: single flight, refresh ahead, failures, 401s, loops, close."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.auth import OAuth2ClientCredentials, OAuth2ClientCredentialsAuth, StaticCredentials
from app.auth.metrics import TokenMetrics
from app.clients.sync import LoopThread
from app.errors import AuthenticationError, ClientClosedError, ClientError, TokenEndpointError
from app.observability.metrics import MetricFamilies
from app.redaction import contains_secret
from tests.support.clock import FakeClock
from tests.support.discovery import eventually
from tests.support.token_server import CLIENT_ID, CLIENT_SECRET, TokenServer
from tests.support.upstream import Upstream


@pytest.fixture
async def tokens() -> AsyncIterator[TokenServer]:
    server = TokenServer(expires_in=100)
    await server.start()
    try:
        yield server
    finally:
        if server.gate is not None:
            server.gate.set()
        await server.close()


@pytest.fixture
async def provider(tokens: TokenServer, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[OAuth2ClientCredentials] = []

    def make(url: str | None = None, **fields: Any) -> OAuth2ClientCredentials:
        config = OAuth2ClientCredentialsAuth.model_validate(
            {
                "type": "oauth2_client_credentials",
                "token_url": url or tokens.url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "refresh_jitter_fraction": 0,
                "token_max_retries": 0,
                **fields,
            }
        )
        credentials = OAuth2ClientCredentials(config, service_name="svc", clock=clock, rng=random.Random(7))
        made.append(credentials)
        return credentials

    yield make
    for credentials in made:
        await credentials.aclose()


async def test_concurrent_callers_share_one_fetch(provider, tokens) -> None:
    """50 callers without a token: one request, one token for all."""
    credentials = provider()
    values = await asyncio.gather(*(credentials.authorization() for _ in range(50)))
    assert set(values) == {f"Bearer {tokens.issued[0]}"}
    assert len(tokens.requests) == 1
    assert credentials.current() == values[0]


async def test_the_refresh_is_jittered_within_its_window(provider, tokens, clock) -> None:
    """With 20% ahead and 10% jitter the refresh starts between 70 and 80 s of a 100 s token, never before."""
    credentials = provider(refresh_jitter_fraction=0.1)
    first = await credentials.authorization()
    clock.advance(69.99)
    assert await credentials.authorization() == first
    await asyncio.sleep(0.05)
    assert len(tokens.requests) == 1
    clock.advance(10.02)
    assert await credentials.authorization() == first  # served at once; the refresh runs behind
    await eventually(
        lambda: credentials.current() == f"Bearer {tokens.issued[-1]}" and len(tokens.issued) == 2
    )


async def test_every_waiter_gets_the_failure(provider, tokens) -> None:
    """A failing fetch reaches each caller that waited for it, as TokenEndpointError (an AuthenticationError)."""
    tokens.fail_status = 500
    credentials = provider()
    results = await asyncio.gather(*(credentials.authorization() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, TokenEndpointError) for r in results)
    assert isinstance(results[0], AuthenticationError | ClientError)
    assert len(tokens.requests) == 1


async def test_a_failed_refresh_keeps_the_token_and_waits_before_trying_again(
    provider, tokens, clock
) -> None:
    """A refresh that fails leaves the current token in use, tried again half the time left later; at expiry the error shows."""
    credentials = provider()
    first = await credentials.authorization()
    tokens.fail_status = 503
    clock.advance(81)  # 19 s left
    assert await credentials.authorization() == first
    await eventually(lambda: tokens.in_flight == 0 and len(tokens.requests) == 2)
    await asyncio.sleep(0.02)
    clock.advance(9)
    assert await credentials.authorization() == first
    await asyncio.sleep(0.05)
    assert len(tokens.requests) == 2  # paused until 9.5 s later
    clock.advance(1)
    assert await credentials.authorization() == first
    await eventually(lambda: len(tokens.requests) == 3)
    await asyncio.sleep(0.02)
    clock.advance(10)  # expired
    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        await credentials.authorization()


async def test_a_401_drops_only_the_token_it_was_for(provider, tokens) -> None:
    """rejected(sent) drops the current token once; a stale one changes nothing; both say a retry makes sense."""
    credentials = provider()
    first = await credentials.authorization()
    assert credentials.rejected("Bearer stale") is True
    assert credentials.current() == first
    assert credentials.rejected(first) is True
    assert credentials.current() is None
    second = await credentials.authorization()
    assert second != first
    assert credentials.rejected(first) is True
    assert credentials.current() == second
    assert contains_secret(first.removeprefix("Bearer "))  # a replaced token stays masked a while
    await credentials.aclose()
    assert credentials.rejected(second) is False
    assert not contains_secret(second.removeprefix("Bearer "))
    with pytest.raises(ClientClosedError):
        await credentials.authorization()


async def test_replaced_tokens_are_forgotten_once_long_expired(provider, tokens, clock) -> None:
    """The redaction registry does not grow with every token: one expired five minutes ago is forgotten."""
    credentials = provider()
    first = (await credentials.authorization()).removeprefix("Bearer ")
    clock.advance(101)
    await credentials.authorization()
    assert contains_secret(first)
    clock.advance(400)
    await credentials.authorization()
    await credentials.authorization()
    assert not contains_secret(first)
    assert len(tokens.requests) == 3


async def test_a_fetch_whose_loop_ends_is_taken_over(provider, tokens) -> None:
    """The fetch ran on another loop that closed under it: a waiter here starts its own and gets a token."""
    credentials = provider()
    tokens.gate = asyncio.Event()
    other = LoopThread("other")
    elsewhere = other.submit(credentials.authorization())
    await eventually(lambda: tokens.in_flight == 1)
    here = asyncio.ensure_future(credentials.authorization())
    await asyncio.sleep(0.02)
    await asyncio.to_thread(other.close)
    assert elsewhere.cancelled()
    tokens.gate.set()
    assert await asyncio.wait_for(here, 5) == f"Bearer {tokens.issued[-1]}"
    assert len(tokens.requests) == 2


async def test_a_wait_bounded_by_a_timeout(provider, tokens) -> None:
    """authorization(timeout) gives up with TokenEndpointError naming the endpoint; the fetch goes on for the next caller."""
    credentials = provider()
    tokens.gate = asyncio.Event()
    with pytest.raises(TokenEndpointError, match="did not answer within the call's deadline") as caught:
        await credentials.authorization(0.05)
    assert caught.value.token_endpoint == tokens.url
    tokens.gate.set()
    assert (await credentials.authorization()).startswith("Bearer at-")
    assert len(tokens.requests) == 1


async def _endpoint(upstream: Upstream, handler: Any) -> str:
    upstream.route("token", handler)
    return upstream.base_url + "/token"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            lambda: web.Response(text="<html>", content_type="text/html"),
            "no usable token in the answer: the answer is not JSON",
        ),
        (lambda: web.json_response({"access_token": "x" * 70_000}), "answer over 65536 bytes"),
        (
            lambda: web.json_response({"access_token": "at-1", "token_type": "mac"}),
            "token_type is not Bearer",
        ),
        (lambda: web.Response(status=302, headers={"Location": "https://evil.test/"}), "failed: HTTP 302"),
        (
            lambda: web.json_response({"error": "invalid_scope"}, status=400),
            "refused the token request: HTTP 400 invalid_scope",
        ),
    ],
)
async def test_answers_that_are_no_token(provider, upstream, answer, says) -> None:
    """Each is a TokenEndpointError naming the endpoint and what was wrong; a redirect is not followed."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return answer()

    url = await _endpoint(upstream, handler)
    credentials = provider(url)
    with pytest.raises(TokenEndpointError) as info:
        await credentials.authorization()
    assert says in str(info.value)
    assert info.value.token_endpoint == url
    assert upstream.hits["token"] == 1


async def test_retries_honour_retry_after_and_succeed(provider, upstream, clock) -> None:
    """A 429 with Retry-After, then a token: two requests, the wait taken from the header (on the fake clock)."""
    answers = [
        web.json_response({"error": "slow_down"}, status=429, headers={"Retry-After": "0.004"}),
        web.json_response({"access_token": "at-Retry-Marker", "expires_in": 30}),
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return answers.pop(0)

    credentials = provider(await _endpoint(upstream, handler), token_max_retries=1)
    assert await credentials.authorization() == "Bearer at-Retry-Marker"
    assert clock.sleeps == [0.004]


async def test_a_static_credential_is_the_same_every_time() -> None:
    """StaticCredentials: one value, at once, and a 401 is not worth a retry."""
    credentials = StaticCredentials("Authorization", "Bearer tok-static-123")
    assert credentials.current() == await credentials.authorization() == "Bearer tok-static-123"
    assert credentials.rejected("Bearer tok-static-123") is False
    await credentials.aclose()


async def test_the_expiry_gauge_shows_the_longest_token_of_the_service_and_outlives_a_closed_client(
    tokens, clock
) -> None:
    """Two clients of one upstream each hold a token: the gauge is the longest left, and one closing leaves the other's."""
    registry = CollectorRegistry()
    metrics = TokenMetrics("svc", MetricFamilies(registry))
    config = OAuth2ClientCredentialsAuth.model_validate(
        {"type": "oauth2_client_credentials", "token_url": tokens.url, "client_id": CLIENT_ID,
         "client_secret": CLIENT_SECRET, "refresh_jitter_fraction": 0}
    )  # fmt: skip
    first = OAuth2ClientCredentials(config, service_name="svc", clock=clock, metrics=metrics)
    second = OAuth2ClientCredentials(config, service_name="svc", clock=clock, metrics=metrics)

    def gauge() -> float | None:
        return registry.get_sample_value("service_client_token_expiry_seconds", {"peer_service": "svc"})

    try:
        assert gauge() == 0.0  # no token yet
        await first.authorization()
        clock.advance(40)
        await second.authorization()  # fetched 40 s later: 100 s left, the first 60 s
        assert gauge() == 100.0
        await second.aclose()
        assert gauge() == 60.0  # the first still holds its token
    finally:
        await first.aclose()
        await second.aclose()
    assert gauge() == 0.0
