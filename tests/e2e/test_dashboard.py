"""The dashboard in a real browser (Debian's Chromium, headless) against the running platform."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from launcher.platform import ANALYSIS_ENGINE
from tests.e2e.conftest import start_platform
from tests.support.browser import browser, chromium_path

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed and `make test` could not install it (apt-get install chromium failed)",
)

CARD = '[data-dependency="analysis-engine-service"]'
PANEL = f'{CARD} [data-role="instances"]'
#: Callers at once while an instance is broken. Peak-EWMA keeps a lone caller away from an
#: instance whose last attempt failed until its penalty decays (tens of seconds); a few at
#: once make the healthy one busy enough for the broken one to be tried, and ejected.
CALLERS = 6


@dataclass
class Fleet:
    gateway: str
    #: The Analysis Engine's instances, as ``(address, API root)``, in the plan's order.
    analysis: list[tuple[str, str]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    """The platform with two Analysis Engine instances (the session's has one of each)."""
    # least_request: the default's failure penalty keeps calls away from a broken instance
    # so well that 5 failures in a row (its ejection) take minutes to gather; this test is
    # about the page showing an ejection, so it lets them come at once.
    running, services, ports = start_platform(
        tmp_path_factory.mktemp("fleet-logs"),
        profile="test",
        ae_replicas=2,
        mlw_replicas=1,
        extra_env={"APP_ANALYSIS_ENGINE__LOAD_BALANCER": "least_request"},
    )
    try:
        yield Fleet(
            gateway=f"http://127.0.0.1:{ports[0]}",
            analysis=[
                (f"127.0.0.1:{s.port}", f"{s.url}/api/v1")
                for s in services
                if s.upstream == ANALYSIS_ENGINE.name
            ],
        )
    finally:
        running.stop()


async def drive_traffic(http, gateway: str, stop: asyncio.Event) -> None:
    """Keep calling the gateway, as users would, so the breaker sees the failures."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            async with http.get(f"{gateway}/api/v1/regime/EURUSD") as resp:
                await resp.read()
        await asyncio.sleep(0.05)


async def drive_callers(http, gateway: str, stop: asyncio.Event) -> collections.Counter[int]:
    """``CALLERS`` users calling the gateway at once until ``stop``; the statuses they got."""
    statuses: collections.Counter[int] = collections.Counter()

    async def caller() -> None:
        while not stop.is_set():
            async with http.get(f"{gateway}/api/v1/regime/EURUSD") as resp:
                await resp.read()
                statuses[resp.status] += 1

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return statuses


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


async def test_dashboard_shows_a_broken_instance_ejected_beside_a_healthy_one(http, fleet, tmp_path) -> None:
    """Break one of two Analysis Engine instances: its row turns ejected, the other stays healthy, calls succeed."""
    (healthy, _), (broken, broken_api) = fleet.analysis
    async with browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{fleet.gateway}/dashboard")
        await page.wait_for_selector(
            f'{PANEL} [data-instance="{broken}"][data-state="healthy"]', timeout=5000
        )
        assert await page.locator(f"{PANEL} [data-instance]").count() == 2
        assert "2/2 healthy" in await page.locator(PANEL).inner_text()
        async with http.put(f"{broken_api}/chaos", json={"error_rate": 1.0, "error_status": 503}) as resp:
            assert resp.status == 200
        stop = asyncio.Event()
        traffic = asyncio.create_task(drive_callers(http, fleet.gateway, stop))
        try:
            await page.wait_for_selector(
                f'{PANEL} [data-instance="{broken}"][data-state="ejected"]', timeout=5000
            )
        finally:
            stop.set()
            statuses = await traffic
        assert set(statuses) == {200}, statuses  # the healthy instance answered every call
        ejected = page.locator(f'{PANEL} [data-instance="{broken}"]')
        assert await ejected.locator('[data-role="instance-state"]').inner_text() == "EJECTED"
        text = await ejected.inner_text()
        assert "s left" in text
        assert "consecutive failures" in text
        failed = re.search(r"(\d+) failed", text)
        assert failed is not None
        assert int(failed.group(1)) >= 5  # the consecutive failures that ejected it
        kept = page.locator(f'{PANEL} [data-instance="{healthy}"]')
        assert await kept.get_attribute("data-state") == "healthy"
        assert await kept.locator('[data-role="instance-state"]').inner_text() == "HEALTHY"
        panel = await page.locator(PANEL).inner_text()
        assert "least request" in panel  # the policy this platform was given
        assert "1/2 healthy" in panel
        assert "discovery file" in panel
        assert "0 rejected" in panel
        assert await page.locator(f'{PANEL} [data-role="panic"]').count() == 0  # one of two: no panic
        # One sick instance is the balancer's business: the breaker stays closed.
        assert await page.locator(f'{CARD} [data-role="breaker"]').inner_text() == "CLOSED"
        await page.screenshot(path=str(tmp_path / "instances-1280x800.png"), full_page=True)

        await page.set_viewport_size({"width": 390, "height": 844})
        await page.wait_for_timeout(300)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0  # the instances table fits a phone too
