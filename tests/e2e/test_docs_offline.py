"""/docs in a real browser (Debian's Chromium, headless): it renders from the gateway alone."""

from __future__ import annotations

import pytest

from tests.support.browser import browser, chromium_path

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed and `make test` could not install it (apt-get install chromium failed)",
)


async def test_docs_render_with_nothing_fetched_from_elsewhere(clean) -> None:
    """/docs renders the API's operations, and every request it made went to the gateway."""
    requested: list[str] = []
    async with browser() as chromium:
        tab = await chromium.new_page()
        tab.on("request", lambda request: requested.append(request.url))
        await tab.goto(f"{clean.gateway}/docs")
        await tab.wait_for_selector(".opblock", timeout=10_000)
        assert await tab.locator(".opblock").count() >= 3  # the gateway's routes are listed
    assert any(url.endswith("/openapi.json") for url in requested)
    outside = [url for url in requested if not url.startswith((clean.gateway, "data:", "blob:"))]
    assert outside == []
