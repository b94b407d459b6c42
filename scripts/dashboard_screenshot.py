"""Screenshot the live dashboard with one upstream instance broken: `python scripts/dashboard_screenshot.py`.

Starts the platform on free ports (two instances of each upstream, as ``make run`` does),
sends the gateway some healthy traffic, then breaks ONE Analysis Engine instance
through its chaos API and slows ONE ML Workbench instance down. With a few callers at
once, the balancer ejects the broken instance within a second and steers the ML
Workbench's calls to its fast instance, while the gateway keeps answering and both
breakers stay closed. Once the page shows the ejection, it saves ``docs/dashboard.png``
from the real page (Debian's Chromium, headless).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.platform import ANALYSIS_ENGINE, ML_WORKBENCH, Platform, ServiceProcess, plan  # noqa: E402
from tests.support.browser import browser, chromium_path  # noqa: E402

OUT = ROOT / "docs" / "dashboard.png"
AE_CARD = '[data-dependency="analysis-engine-service"]'
#: Concurrent callers. One caller at a time would do too, but slowly: peak-EWMA sends
#: nothing to an instance whose last attempt failed until its penalty has decayed; a
#: few callers at once make the healthy instance busy enough for it to be tried again.
CALLERS = 6
#: Calls each caller makes, in turn, to the gateway: one from the Analysis Engine alone,
#: one from both upstreams.
CALLS = ("/api/v1/regime/EURUSD", "/api/v1/signals/GBPUSD")
#: Resolves once the page has drawn an update whose last second holds at least 80% of the
#: calls of the one before, in every card (or after 10 s, whatever the page shows).
AFTER_A_FULL_SECOND = """() => new Promise(resolve => {
  const done = () => {
    stream.removeEventListener("message", check);
    requestAnimationFrame(() => resolve());
  };
  const check = (event) => {
    const full = Object.values(JSON.parse(event.data).dependencies).every(s => {
      const n = s.series.map(p => p.requests);
      return n.length < 2 || n[n.length - 1] >= 0.8 * n[n.length - 2];
    });
    if (full) done();
  };
  stream.addEventListener("message", check);
  setTimeout(done, 10000);
})"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instances(services: list[ServiceProcess], upstream: str) -> list[ServiceProcess]:
    """``upstream``'s instances, in the plan's order (8001, then 8011 with the default ports)."""
    return [s for s in services if s.upstream == upstream]


async def callers(http: aiohttp.ClientSession, gateway: str, stop: asyncio.Event) -> collections.Counter[int]:
    """``CALLERS`` users calling the gateway until ``stop``; the statuses they got."""
    statuses: collections.Counter[int] = collections.Counter()

    async def one(offset: int) -> None:
        turn = offset
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(gateway + CALLS[turn % len(CALLS)]) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            turn += 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(one(i) for i in range(CALLERS)))
    return statuses


async def shoot(gateway: str, analysis: list[ServiceProcess], workbench: list[ServiceProcess]) -> None:
    broken, slow = analysis[-1], workbench[-1]  # one instance each; the first keeps answering
    row = f"{AE_CARD} [data-instance='127.0.0.1:{broken.port}']"
    async with aiohttp.ClientSession() as http, browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{gateway}/dashboard")
        await page.wait_for_selector(f"{row}[data-state=healthy]", timeout=10_000)
        stop = asyncio.Event()
        traffic = asyncio.create_task(callers(http, gateway, stop))
        try:
            await asyncio.sleep(4)  # healthy traffic first, so every card has history
            async with http.put(f"{broken.url}/api/v1/chaos", json={"error_rate": 1.0, "error_status": 503}):
                pass
            async with http.put(f"{slow.url}/api/v1/chaos", json={"latency_ms": 80, "latency_jitter_ms": 40}):
                pass
            started = time.monotonic()
            await page.wait_for_selector(f"{row}[data-state=ejected]", timeout=15_000)
            print(f"{broken.name} ejected {time.monotonic() - started:.1f} s after it broke")
            # The shares of traffic decay over 10 s: the ejected instance's fades, and the
            # sparklines show the fault's spike behind them. Its ejection lasts 30 s.
            await asyncio.sleep(8)
            # Taken while the callers still call, so the page shows them, just after an
            # update whose last second was nearly full: the series ends with the second
            # under way, which would otherwise often draw a drop in traffic at its end.
            await page.evaluate(AFTER_A_FULL_SECOND)
            OUT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(OUT), full_page=True)
        finally:
            stop.set()
            statuses = await traffic
        breaker = await page.locator(f'{AE_CARD} [data-role="breaker"]').inner_text()
        print(f"gateway answers by status {dict(statuses)}; Analysis Engine breaker {breaker}")


def main() -> int:
    """Run the platform, take the screenshot, stop the platform."""
    if chromium_path() is None:
        print("Chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    ports = free_port(), free_port(), free_port()
    # least_request, as the dashboard's browser test: the default's failure penalty keeps calls
    # off the broken instance so well that its ejection takes minutes to earn.
    services = plan(*ports, extra_env={"APP_ANALYSIS_ENGINE__LOAD_BALANCER": "least_request"})
    for service in services:
        service.log_path = Path("/tmp") / f"screenshot-{service.name}.log"  # noqa: S108 - a dev script's scratch logs
    platform = Platform(services)
    platform.start()
    try:
        asyncio.run(
            shoot(
                f"http://127.0.0.1:{ports[0]}",
                instances(services, ANALYSIS_ENGINE.name),
                instances(services, ML_WORKBENCH.name),
            )
        )
    finally:
        platform.stop()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
