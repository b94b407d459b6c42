"""Headless Debian Chromium driven by Playwright, for the dashboard tests and the README screenshot."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # root in CI and in the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine reaches no network but loopback: keep Chromium from calling home.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Playwright's async API); the caller checks ``chromium_path()`` first."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 - only the browser tests need it

    path = chromium_path()
    assert path is not None
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            await instance.close()
