"""The gateway's own HTTP server metrics, by route template, as a plain ASGI middleware.

Label names are OpenTelemetry's HTTP server semantic conventions as Prometheus writes
them: ``http_request_method``, ``http_route``, ``http_response_status_code``.
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetricsMiddleware"]

_families: dict[int, tuple[Counter, Histogram]] = {}


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    found = _families.get(id(registry))
    if found is None:
        found = _families[id(registry)] = (
            Counter(
                "http_server_requests",
                "Requests served",
                ["http_request_method", "http_route", "http_response_status_code"],
                registry=registry,
            ),
            Histogram(
                "http_server_request_duration_seconds",
                "Time to serve a request",
                ["http_request_method", "http_route"],
                registry=registry,
            ),
        )
    return found


class HttpMetricsMiddleware:
    """Counts and times every request by method, route template and status.

    The route is the template (``/api/v1/signals/{symbol}``), never the filled-in path,
    so a scan of random URLs cannot grow the label set: unmatched paths share one label.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry = REGISTRY) -> None:
        self.app = app
        self._requests, self._duration = _metrics(registry)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve and measure one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            key = (scope["method"], route, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self._requests.labels(scope["method"], route, str(status)),
                    self._duration.labels(scope["method"], route),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
