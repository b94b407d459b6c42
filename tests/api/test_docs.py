"""/docs and /redoc work offline: every asset they load is served by the gateway itself."""

from __future__ import annotations

import re

from app.main import create_app
from tests.support.asgi import serve

#: Every URL a page can load: src/href/spec-url attributes and the Swagger UI config's url.
URL_IN_PAGE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")
EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


async def test_docs_page_loads_only_same_origin_assets(container, http) -> None:
    """/docs names no other origin; each URL it loads answers 200 with its content type."""
    async with serve(create_app(container)) as base:
        async with http.get(f"{base}/docs") as resp:
            assert resp.status == 200
            html = await resp.text()
        assert "://" not in html  # no CDN, no absolute URL of any origin
        urls = {a or b for a, b in URL_IN_PAGE.findall(html)}
        assert any(u.endswith(".js") for u in urls)  # the UI's script is among them
        assert "/openapi.json" in urls
        for url in urls:
            assert url.startswith("/"), url
            assert not url.startswith("//"), url  # protocol-relative: another host
            async with http.get(base + url) as asset:
                assert asset.status == 200, url
                suffix = url[url.rfind(".") :]
                assert EXPECTED_TYPES[suffix] in asset.headers["Content-Type"], url
                assert len(await asset.read()) > 100, url


async def test_no_redoc_page(container, http) -> None:
    """/redoc is not served: ReDoc's bundle loads its logo from its CDN, so it cannot be offline."""
    async with serve(create_app(container)) as base, http.get(f"{base}/redoc") as resp:
        assert resp.status == 404


async def test_openapi_schema_lists_the_routes(container, http) -> None:
    """The OpenAPI schema the docs read is served, with the gateway's routes."""
    async with serve(create_app(container)) as base, http.get(f"{base}/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    assert {"/api/v1/signals/{symbol}", "/api/v1/indicators/{symbol}", "/health/ready"} <= set(paths)
