"""A third upstream, configured by environment variables alone, shows on the dashboard in a real browser."""

from __future__ import annotations

import os

import aiohttp
import pytest

from app.clients.testing import fast_env
from app.main import create_app
from tests.integration.pricing_service import router
from tests.support.asgi import serve
from tests.support.browser import browser, chromium_path
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed and `make test` could not install it (apt-get install chromium failed)",
)

CARD = '[data-dependency="pricing-service"]'


async def test_the_dashboard_shows_a_configured_upstream(monkeypatch, upstream: Upstream) -> None:
    """APP_UPSTREAMS__PRICING__*: a "pricing-service" card next to the gateway's own two, live."""
    for name in list(os.environ):
        if name.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "test")
    for name, value in fast_env("pricing", upstream.base_url).items():
        monkeypatch.setenv(name, value)
    # Open long enough for the page to show it (the fast settings half-open after 0.1 s).
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "30")
    upstream.route("*", json({"detail": "down", "code": "unavailable"}, status=503))
    async with (
        serve(create_app(routers=[router])) as base,
        aiohttp.ClientSession() as http,
        browser() as chromium,
    ):
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{base}/dashboard")
        await page.wait_for_selector(f'{CARD} [data-role="breaker"].closed', timeout=5000)
        assert await page.locator("[data-dependency]").count() == 3
        # Five failed calls in a row (one attempt and three retries each) open its breaker.
        for _ in range(2):
            async with http.get(f"{base}/api/v1/pricing/EURUSD") as resp:
                assert resp.status == 503
        await page.wait_for_selector(f'{CARD} [data-role="breaker"].open', timeout=5000)
        assert await page.locator(f'{CARD} [data-role="breaker"]').inner_text() == "OPEN"
