"""A third upstream from environment variables alone: a route, the factory, status, readiness, metrics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.clients import BaseServiceClient
from app.clients.testing import override_client
from app.containers import Container
from app.factory import close_factory_clients, get_client, register_client_config
from app.main import create_app
from settings import SettingsError
from tests.integration.pricing_service import PricingClient, router
from tests.support.asgi import serve
from tests.support.upstream import Upstream, json

QUOTE = {"symbol": "EURUSD", "bid": 1.0841, "ask": 1.0843}
KEY = "pricing-key-5f1e2d3c"


@pytest.fixture
async def pricing() -> AsyncIterator[Upstream]:
    """The pricing service: a real aiohttp server on a free port."""
    up = Upstream()
    up.route("quotes/EURUSD", json(QUOTE))
    await up.server.start_server()
    try:
        yield up
    finally:
        await up.server.close()


@pytest.fixture
def env(monkeypatch, pricing: Upstream) -> None:
    """The test profile plus the pricing upstream's variables, and nothing else of the machine's."""
    for name in list(os.environ):
        if name.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__BASE_URL", pricing.base_url)
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__API_KEY", KEY)
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__RETRY_BASE_DELAY", "0.001")
    monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", "analysis_engine,pricing")


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_a_third_upstream_by_environment_alone(env, pricing: Upstream) -> None:
    """APP_UPSTREAMS__PRICING__*: served through a user route, the factory, the status API, readiness and metrics."""
    container = Container()
    app = create_app(container, routers=[router])
    async with serve(app) as base, aiohttp.ClientSession() as http:
        # A route of the user's, with the typed client the container built for "pricing".
        status, body = await fetch(http, f"{base}/api/v1/pricing/EURUSD")
        assert status == 200, body
        assert body == {"client": "PricingClient", **QUOTE}
        sent = pricing.requests[-1]
        assert sent.headers["X-API-Key"] == KEY
        assert "pricing-service" in sent.headers["User-Agent"]  # the lifespan's session for it

        sub = container.upstreams()["pricing"]
        client = await sub.client()
        assert isinstance(client, PricingClient)
        assert client.config.timeout_seconds == 2.5
        assert client.service_name == "pricing-service"

        # The factory: by name or service name, the container's policies.
        shared = get_client(BaseServiceClient, "pricing")
        assert shared.breaker is sub.breaker()
        assert shared.config.base_url == pricing.base_url + "/"
        assert await shared.get("quotes/{symbol}", path_params={"symbol": "EURUSD"}) == QUOTE
        assert get_client(PricingClient, "pricing-service").breaker is sub.breaker()

        # The status API, readiness (with its essential flag) and metrics.
        status, resilience = await fetch(http, f"{base}/api/v1/resilience")
        assert status == 200
        assert list(resilience["dependencies"]) == [
            "analysis-engine-service",
            "ml-workbench-service",
            "pricing-service",
        ]
        assert resilience["dependencies"]["pricing-service"]["counts"]["success"] == 2
        assert resilience["dependencies"]["pricing-service"]["essential"] is True
        status, ready = await fetch(http, f"{base}/health/ready")
        assert status == 200
        entry = ready["dependencies"]["pricing-service"]
        assert (entry["status"], entry["essential"], entry["breaker"]) == ("ok", True, "closed")
        assert entry["bulkhead"]["limit"] == 10  # ClientConfig's default: none of the gateway's
        status, metrics = await fetch(http, f"{base}/metrics")
        assert status == 200
        assert 'peer_service="pricing-service"' in metrics
        assert 'url_template="quotes/{symbol}"' in metrics

        # Its breaker is the readiness of an essential dependency like any other.
        sub.breaker().open()
        status, ready = await fetch(http, f"{base}/health/ready")
        assert (status, ready["dependencies"]["pricing-service"]["status"]) == (503, "unavailable")
        await close_factory_clients()
    # The lifespan closed what it opened for the configured upstream.
    assert not sub.client.initialized
    assert not sub.session.initialized
    assert client._closed


async def test_an_upstream_without_a_bound_class_gets_a_base_client(env, monkeypatch) -> None:
    """A configured name with no class bound: a BaseServiceClient, service_name "<name>-service", degradable."""
    monkeypatch.setenv("APP_UPSTREAMS__INVENTORY__BASE_URL", "http://127.0.0.1:9/inventory")
    container = Container()
    async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
        client = await container.upstreams()["inventory"].client()
        assert type(client) is BaseServiceClient
        assert client.service_name == "inventory-service"
        container.upstreams()["inventory"].breaker().open()
        status, ready = await fetch(http, f"{base}/health/ready")
    assert status == 200
    assert ready["status"] == "degraded"
    assert ready["dependencies"]["inventory-service"]["essential"] is False


class FakePricing:
    """Stands in for PricingClient in the override test."""

    service_name = "pricing-service"

    async def quote(self, symbol: str) -> dict[str, Any]:
        return {"symbol": symbol, "bid": 0.0, "ask": 0.0}


async def test_override_client_swaps_the_configured_upstream_for_routes_and_factory(env, pricing) -> None:
    """override_client(container, "pricing", fake): the route and get_client see the fake, then the real one again."""
    container = Container()
    fake = FakePricing()
    async with serve(create_app(container, routers=[router])) as base, aiohttp.ClientSession() as http:
        with override_client(container, "pricing", fake):
            status, body = await fetch(http, f"{base}/api/v1/pricing/EURUSD")
            assert (status, body["client"], body["bid"]) == (200, "FakePricing", 0.0)
            assert get_client(PricingClient, "pricing") is fake
        status, body = await fetch(http, f"{base}/api/v1/pricing/EURUSD")
        assert (status, body["client"]) == (200, "PricingClient")
        assert pricing.hits["quotes/EURUSD"] == 1  # only the call after the block reached it


def test_register_client_config_re_points_a_configured_upstream(env) -> None:
    """register_client_config("pricing", ...) on a configured upstream re-points the container's entry."""
    container = Container()
    create_app(container)
    register_client_config(
        "pricing", {"base_url": "http://127.0.0.1:9300/", "service_name": "pricing-service"}
    )
    sub = container.upstreams()["pricing"]
    assert sub.config().base_url == "http://127.0.0.1:9300/"
    assert get_client(BaseServiceClient, "pricing").breaker is sub.breaker()


async def test_app_routers_serves_a_route_module_by_configuration(env, monkeypatch, pricing) -> None:
    """APP_ROUTERS=module:router: create_app() (as `python -m app` calls it) serves the user's routes."""
    monkeypatch.setenv("APP_ROUTERS", "tests.integration.pricing_service:router")
    async with serve(create_app()) as base, aiohttp.ClientSession() as http:
        status, body = await fetch(http, f"{base}/api/v1/pricing/EURUSD")
    assert (status, body["client"], body["bid"]) == (200, "PricingClient", QUOTE["bid"])


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.integration.no_such_module:router", "cannot import"),
        ("tests.integration.pricing_service:nothing", "cannot import"),
        ("tests.integration.pricing_service:PricingClient", "is a type, not an APIRouter"),
    ],
)
def test_app_routers_that_cannot_be_served_stop_create_app(env, monkeypatch, spec, problem) -> None:
    """An entry that does not import, or is no router, fails create_app with one line naming the variable."""
    monkeypatch.setenv("APP_ROUTERS", spec)
    with pytest.raises(SettingsError, match=rf"routers \(APP_ROUTERS\): .*{problem}"):
        create_app()
