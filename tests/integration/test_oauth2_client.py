"""OAuth2 client credentials against a real token endpoint and a real upstream that checks the token."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from app.clients import (
    BaseServiceClient,
    ClientAuthenticationError,
    ClientClosedError,
    ClientConfig,
    ClientError,
    TokenEndpointError,
)
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from app.observability.tracing import configure_tracing
from tests.support.clock import FakeClock
from tests.support.discovery import eventually
from tests.support.manual_clock import settle
from tests.support.token_server import CLIENT_ID, CLIENT_SECRET, TokenServer
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


@pytest.fixture
async def tokens() -> AsyncIterator[TokenServer]:
    server = TokenServer(expires_in=100)
    await server.start()
    try:
        yield server
    finally:
        if server.gate is not None:
            server.gate.set()  # a request held by a test must not hold up the server's close
        await server.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def build(
    tokens: TokenServer, upstream: Upstream, clock: FakeClock, registry: CollectorRegistry, transport: str
) -> AsyncIterator[Any]:
    """Clients of the upstream with OAuth2 credentials from ``tokens``, on the fake clock; closed at the end."""
    made: list[BaseServiceClient] = []

    def make(auth: dict[str, Any] | None = None, **fields: Any) -> BaseServiceClient:
        config = ClientConfig(
            base_url=upstream.base_url,
            service_name="ae",
            timeout_seconds=2.0,
            retry_base_delay=0.001,
            retry_max_delay=0.01,
            retry_jitter=False,
            bulkhead_max_concurrent=500,
            bulkhead_max_waiting=500,
            transport=transport,
            auth={
                "type": "oauth2_client_credentials",
                "token_url": tokens.url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scope": "indicators:read regime:read",
                "audience": "analysis-engine",
                "extra_params": {"resource": "urn:ae"},
                "refresh_jitter_fraction": 0,
                "token_retry_base_delay_seconds": 0.001,
                "token_retry_max_delay_seconds": 0.01,
                **(auth or {}),
            },
            **fields,
        )
        policies = ClientPolicies.from_config(config, clock, families=MetricFamilies(registry))
        client = BaseServiceClient(config, policies=policies)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def refreshed(client: BaseServiceClient, tokens: TokenServer, count: int) -> None:
    """Wait until the ``count``-th token is issued and is the one the client holds."""
    credentials = client._credentials
    assert credentials is not None
    await eventually(
        lambda: len(tokens.issued) == count and credentials.current() == f"Bearer {tokens.issued[-1]}"
    )


def ok(upstream: Upstream, tokens: TokenServer, path: str = "prices") -> None:
    upstream.route(path, tokens.protect(json({"ok": True})))


def sent_tokens(upstream: Upstream) -> list[str | None]:
    return [r.headers.get("Authorization") for r in upstream.requests]


async def test_200_concurrent_calls_without_a_token_cause_one_token_request(build, upstream, tokens) -> None:
    """200 calls at once, no token yet: exactly one token request, and every call succeeds with its token."""
    ok(upstream, tokens)
    client = build()
    results = await asyncio.gather(*(client.get("prices") for _ in range(200)))
    assert results == [{"ok": True}] * 200
    assert len(tokens.requests) == 1
    assert tokens.max_in_flight == 1
    assert set(sent_tokens(upstream)) == {f"Bearer {tokens.issued[0]}"}


async def test_the_token_is_refreshed_ahead_of_expiry_in_the_background(
    build, upstream, tokens, clock
) -> None:
    """Past 80% of the lifetime the next call starts a refresh and goes on with the current token; later calls use the new one."""
    ok(upstream, tokens)
    client = build()
    await client.get("prices")
    clock.advance(79)  # refresh at 80 s of 100
    await client.get("prices")
    await asyncio.sleep(0.05)
    assert len(tokens.requests) == 1
    clock.advance(2)
    await client.get("prices")  # starts the refresh; sent with the first token
    await refreshed(client, tokens, 2)
    assert len(tokens.requests) == 2
    await client.get("prices")
    first, second = (f"Bearer {t}" for t in tokens.issued)
    assert sent_tokens(upstream) == [first, first, first, second]


async def test_a_slow_token_endpoint_delays_no_call_until_the_token_expires(
    build, upstream, tokens, clock
) -> None:
    """The refresh hangs: calls keep the current token until it expires, then wait for that same fetch, then all go on."""
    ok(upstream, tokens)
    client = build()
    await client.get("prices")
    tokens.gate = asyncio.Event()
    clock.advance(85)
    served = await asyncio.wait_for(asyncio.gather(*(client.get("prices") for _ in range(20))), 5)
    assert len(served) == 20
    await eventually(lambda: len(tokens.requests) == 2)
    assert tokens.in_flight == 1  # the refresh is still held by the endpoint
    clock.advance(16)  # the first token has expired
    waiting = [asyncio.ensure_future(client.get("prices")) for _ in range(30)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)
    tokens.gate.set()
    assert await asyncio.gather(*waiting) == [{"ok": True}] * 30
    assert len(tokens.requests) == 2  # the waiters shared the refresh in flight
    first, second = (f"Bearer {t}" for t in tokens.issued)
    assert sent_tokens(upstream) == [first] * 21 + [second] * 30


async def test_a_failing_token_endpoint_is_a_typed_error_and_leaves_the_upstreams_breaker_alone(
    build, upstream, tokens, registry, clock
) -> None:
    """A token endpoint answering 503: TokenEndpointError naming it; the upstream is never called and its breaker never counts."""
    ok(upstream, tokens)
    tokens.fail_status = 503
    # Its breaker counts attempts, as the upstream's does: 3 failed attempts in a row open it.
    client = build({"token_max_retries": 2, "token_breaker_failure_threshold": 3})
    with pytest.raises(TokenEndpointError) as info:
        await client.get("prices")
    error = info.value
    assert error.token_endpoint == tokens.url
    assert tokens.url in str(error)
    assert "HTTP 503 after 3 attempts" in str(error)
    assert error.status is None
    assert error.token_status == 503
    assert (error.service_name, error.method, error.endpoint, error.attempts) == ("ae", "GET", "prices", 0)
    assert len(tokens.requests) == 3
    for _ in range(5):  # more than the upstream breaker's threshold
        with pytest.raises(TokenEndpointError, match="circuit breaker is open") as info:
            await client.get("prices")
        assert info.value.retry_after is not None
    assert len(tokens.requests) == 3
    assert upstream.hits["prices"] == 0
    assert client.breaker.state_name == "closed"
    assert client.breaker.fail_counter == 0
    metrics = generate_latest(registry).decode()
    assert 'service_client_token_fetches_total{outcome="server_error",peer_service="ae"} 1.0' in metrics
    assert 'service_client_token_fetches_total{outcome="short_circuited",peer_service="ae"} 5.0' in metrics
    assert (
        'service_client_requests_total{http_request_method="GET",http_response_status_code="",'
        'outcome="client_error",peer_service="ae",url_template="prices"} 6.0'
    ) in metrics
    tokens.fail_status = None
    clock.advance(31)  # the token breaker half-opens: the next call fetches again
    assert await client.get("prices") == {"ok": True}
    assert len(tokens.requests) == 4


async def test_a_token_endpoint_failing_once_is_retried_within_the_fetch(build, upstream, tokens) -> None:
    """One 503, then a token: the fetch retries (its own retry policy) and the call succeeds."""
    ok(upstream, tokens)
    tokens.fail_status, tokens.fail_next = 503, 1
    client = build()
    assert await client.get("prices") == {"ok": True}
    assert len(tokens.requests) == 2


async def test_refused_client_credentials_are_not_retried(build, upstream, tokens) -> None:
    """A token endpoint that refuses the client (401 invalid_client): one request per fetch, the error says so."""
    ok(upstream, tokens)
    client = build({"client_secret": "cs-Wrong-Marker77aa"})
    with pytest.raises(TokenEndpointError, match="refused the token request: HTTP 401 invalid_client"):
        await client.get("prices")
    assert len(tokens.requests) == 1


async def test_100_calls_meeting_a_revoked_token_cause_one_refresh_and_one_retry_each(
    build, upstream, tokens
) -> None:
    """The upstream starts refusing the token: exactly one token request, each call sent twice, all succeed."""
    ok(upstream, tokens)
    client = build(max_retries=0)  # the retry after a 401 is outside the retry count
    await client.get("prices")
    tokens.revoke()
    results = await asyncio.gather(*(client.get("prices") for _ in range(100)))
    assert results == [{"ok": True}] * 100
    assert len(tokens.requests) == 2
    assert upstream.hits["prices"] == 1 + 200
    first, second = (f"Bearer {t}" for t in tokens.issued)
    assert sorted(sent_tokens(upstream)[1:]) == sorted([first] * 100 + [second] * 100)
    assert client.breaker.fail_counter == 0


async def test_a_second_401_is_client_authentication_error(build, upstream, tokens) -> None:
    """An upstream that refuses every token: one refresh and one retry, then ClientAuthenticationError (2 attempts)."""

    async def refuse(request):
        return await json({"detail": "no"}, status=401)(request)

    upstream.route("prices", refuse)
    client = build()
    with pytest.raises(ClientAuthenticationError) as info:
        await client.get("prices")
    assert info.value.status == 401
    assert info.value.attempts == 2
    assert upstream.hits["prices"] == 2
    assert len(tokens.requests) == 2
    assert client.breaker.fail_counter == 0


async def test_a_403_is_not_retried_with_a_new_token(build, upstream, tokens) -> None:
    """Forbidden is not expired: no refresh, no retry."""
    upstream.route("prices", json({"detail": "forbidden"}, status=403))
    client = build()
    with pytest.raises(ClientAuthenticationError):
        await client.get("prices")
    assert upstream.hits["prices"] == 1
    assert len(tokens.requests) == 1


async def test_scope_audience_and_extra_params_go_with_every_fetch(build, upstream, tokens, clock) -> None:
    """The first fetch, a refresh ahead and a refresh after a 401 each send scope, audience and the extra params."""
    ok(upstream, tokens)
    client = build()
    await client.get("prices")
    clock.advance(81)
    await client.get("prices")
    await refreshed(client, tokens, 2)
    tokens.revoke()
    await client.get("prices")
    assert len(tokens.requests) == 3
    for request in tokens.requests:
        assert request.form == {
            "grant_type": "client_credentials",
            "scope": "indicators:read regime:read",
            "audience": "analysis-engine",
            "resource": "urn:ae",
        }


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_authentication_methods(build, upstream, tokens, method) -> None:
    """Basic: form-encoded id and secret in HTTP Basic, none in the form; post: both in the form, no Authorization."""
    secret = "p@ss word:+/&Marker5c1d"  # characters RFC 6749 §2.3.1 form-encodes before Basic
    tokens.client_secret = secret
    ok(upstream, tokens)
    client = build({"client_auth_method": method, "client_secret": secret})
    assert await client.get("prices") == {"ok": True}
    (request,) = tokens.requests
    assert request.method == method
    if method == "client_secret_basic":
        assert request.basic == (CLIENT_ID, secret)
        raw = base64.b64decode((request.authorization or "").removeprefix("Basic ")).decode()
        assert raw == "gateway-client:p%40ss+word%3A%2B%2F%26Marker5c1d"
        assert "client_secret" not in request.form
        assert "client_id" not in request.form
    else:
        assert request.authorization is None
        assert (request.form["client_id"], request.form["client_secret"]) == (CLIENT_ID, secret)


async def test_a_caller_that_gives_up_leaves_the_fetch_to_the_others(build, upstream, tokens) -> None:
    """One waiter's deadline passes and another is cancelled: the shared fetch goes on, and the rest get its token."""
    ok(upstream, tokens)
    client = build()
    tokens.gate = asyncio.Event()
    cancelled = asyncio.ensure_future(client.get("prices"))
    others = [asyncio.ensure_future(client.get("prices")) for _ in range(5)]
    with pytest.raises(TokenEndpointError, match="did not answer within the call's deadline") as caught:
        await client.get("prices", timeout=0.05)
    assert caught.value.token_endpoint == tokens.url
    # The token endpoint's slowness, not the upstream's: its rolling stats count no timeout.
    assert client.policies.observer.stats.snapshot()["counts"]["timeout"] == 0
    cancelled.cancel()
    await settle()
    assert cancelled.cancelled()
    tokens.gate.set()
    assert await asyncio.gather(*others) == [{"ok": True}] * 5
    assert len(tokens.requests) == 1


async def test_the_sync_twins_share_the_token_and_its_refresh(build, upstream, tokens) -> None:
    """Blocking calls on other threads use the async calls' token, and a revoked token is refreshed once for both."""
    ok(upstream, tokens)
    client = build()
    await client.get("prices")
    assert await asyncio.to_thread(client.get_sync, "prices") == {"ok": True}
    assert len(tokens.requests) == 1
    tokens.revoke()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(client.get_sync("prices"))) for _ in range(5)]
    for thread in threads:
        thread.start()
    async_results = await asyncio.gather(*(client.get("prices") for _ in range(5)))
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert results == [{"ok": True}] * 5
    assert async_results == [{"ok": True}] * 5
    assert len(tokens.requests) == 2


async def test_close_with_a_fetch_in_flight(build, upstream, tokens) -> None:
    """Closing while calls wait for a token: they end with ClientClosedError, the fetch is cancelled, nothing leaks."""
    ok(upstream, tokens)
    client = build()
    tokens.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(client.get("prices")) for _ in range(3)]
    await settle()
    await client.close()
    for task in waiting:
        with pytest.raises(ClientClosedError):
            await task
    with pytest.raises(ClientClosedError):
        await client.get("prices")


def _texts(value: Any) -> str:
    return orjson.dumps(value, default=repr).decode()


async def test_no_token_or_secret_in_logs_metrics_spans_or_errors(
    build, upstream, tokens, clock, registry, caplog
) -> None:
    """Across first fetch, refresh ahead, a revoked token, a refusing upstream and a failing endpoint: no secret anywhere."""
    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(spans)])
    errors: list[ClientError] = []
    try:
        ok(upstream, tokens)
        client = build()
        await asyncio.gather(*(client.get("prices") for _ in range(10)))
        clock.advance(81)
        await client.get("prices")
        await refreshed(client, tokens, 2)
        tokens.revoke()
        await asyncio.gather(*(client.get("prices") for _ in range(10)))
        upstream.route("echo", lambda r: json({"detail": r.headers.get("Authorization")}, status=401)(r))
        with pytest.raises(ClientAuthenticationError) as refused:
            await client.get("echo")
        errors.append(refused.value)
        tokens.fail_status = 503
        tokens.revoke()
        with pytest.raises(TokenEndpointError) as failed:
            await client.get("prices")
        errors.append(failed.value)
    finally:
        configure_tracing("test", "none")
    secrets = [
        *tokens.issued,
        CLIENT_SECRET,
        base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
    ]
    assert len(tokens.issued) == 4
    records = [
        " ".join([r.getMessage(), _texts(getattr(r, "fields", None)), _texts(r.args), str(r.exc_info)])
        for r in caplog.records
    ]
    assert any("token for ae from" in line for line in records)
    metrics = generate_latest(registry).decode()
    assert "service_client_token_expiry_seconds" in metrics
    span_texts = [
        _texts([s.name, dict(s.attributes or {}), [(e.name, dict(e.attributes or {})) for e in s.events]])
        for s in spans.get_finished_spans()
    ]
    assert any("credentials_refreshed" in text for text in span_texts)
    error_texts = [
        text
        for error in errors
        for e in (error, error.__cause__)
        if e is not None
        for text in (str(e), repr(e), _texts(getattr(e, "context", dict)()), str(getattr(e, "detail", "")))
    ]
    for secret in secrets:
        for text in [*records, metrics, *span_texts, *error_texts]:
            assert secret not in text
