"""The dashboard in a real browser (Debian's Chromium, headless) against the running platform."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.browser import browser, chromium_path

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed and `make test` could not install it (apt-get install chromium failed)",
)

CARD = '[data-dependency="analysis-engine-service"]'


async def drive_traffic(http, gateway: str, stop: asyncio.Event) -> None:
    """Keep calling the gateway, as users would, so the breaker sees the failures."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            async with http.get(f"{gateway}/api/v1/regime/EURUSD") as resp:
                await resp.read()
        await asyncio.sleep(0.05)


async def test_dashboard_shows_a_broken_upstream_open_within_5_s(http, clean, tmp_path) -> None:
    """Break the Analysis Engine through chaos: its card shows the breaker open within 5 s."""
    requested: list[str] = []
    async with browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(f"{clean.gateway}/dashboard")
        await page.wait_for_selector(f'{CARD} [data-role="breaker"].closed', timeout=5000)
        assert await page.locator("[data-dependency]").count() == 2
        async with http.put(f"{clean.analysis}/chaos", json={"error_rate": 1.0, "error_status": 503}) as resp:
            assert resp.status == 200
        stop = asyncio.Event()
        traffic = asyncio.create_task(drive_traffic(http, clean.gateway, stop))
        try:
            await page.wait_for_selector(f'{CARD} [data-role="breaker"].open', timeout=5000)
        finally:
            stop.set()
            await traffic
        assert await page.locator(f'{CARD} [data-role="breaker"]').inner_text() == "OPEN"
        assert (
            float((await page.locator(f'{CARD} [data-role="error-percent"]').inner_text()).rstrip("%")) > 50
        )
        await page.screenshot(path=str(tmp_path / "dashboard-1280x800.png"), full_page=True)
        assert (tmp_path / "dashboard-1280x800.png").stat().st_size > 10_000

        await page.set_viewport_size({"width": 390, "height": 844})
        await page.wait_for_timeout(300)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0  # readable at phone width: nothing runs off the side
        await page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)
        assert await page.locator("#conn").inner_text() == "live"  # fed by the stream, never reloaded
    assert requested
    assert all(url.startswith(clean.gateway) for url in requested)  # self-contained: no CDN
