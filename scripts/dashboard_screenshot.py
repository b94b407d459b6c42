"""Screenshot the live dashboard with one upstream broken: ``python scripts/dashboard_screenshot.py``.

Starts the platform on free ports, breaks the Analysis Engine through its chaos API,
sends the gateway some traffic, waits for the card to show the breaker open, and
saves ``docs/dashboard.png`` from the real page (Debian's Chromium, headless).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.platform import Platform, plan  # noqa: E402
from tests.support.browser import browser, chromium_path  # noqa: E402

OUT = ROOT / "docs" / "dashboard.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def shoot(gateway: str, analysis: str, workbench: str) -> None:
    async with aiohttp.ClientSession() as http, browser() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{gateway}/dashboard")
        for _ in range(30):  # some healthy traffic first, so both cards have history
            async with http.get(f"{gateway}/api/v1/signals/EURUSD") as resp:
                await resp.read()
        async with http.put(f"{analysis}/chaos", json={"error_rate": 1.0, "error_status": 503}):
            pass
        async with http.put(f"{workbench}/chaos", json={"latency_ms": 40, "latency_jitter_ms": 60}):
            pass
        for _ in range(20):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{gateway}/api/v1/regime/EURUSD") as resp:
                    await resp.read()
                async with http.get(f"{gateway}/api/v1/signals/GBPUSD") as resp:
                    await resp.read()
        await page.wait_for_selector(
            '[data-dependency="analysis-engine-service"] .badge.open', timeout=10_000
        )
        await page.wait_for_timeout(1200)
        OUT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(OUT), full_page=True)


def main() -> int:
    """Run the platform, take the screenshot, stop the platform."""
    if chromium_path() is None:
        print("Chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    ports = free_port(), free_port(), free_port()
    platform = Platform(plan(*ports))
    for service in platform.services:
        service.log_path = Path("/tmp") / f"screenshot-{service.name}.log"  # noqa: S108 - a dev script's scratch logs
    platform.start()
    try:
        base = [f"http://127.0.0.1:{p}" for p in ports]
        asyncio.run(shoot(base[0], base[1] + "/api/v1", base[2] + "/api/v1"))
    finally:
        platform.stop()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
