"""Memory: 10k calls in flight at once, and RSS growth over many calls.

``python -m benchmarks.memory inflight URL N`` and ``python -m benchmarks.memory growth URL N``
each print one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
from pathlib import Path

from app.clients import BaseServiceClient, ClientConfig
from app.runtime import run


def rss_mb() -> float:
    """Current resident set size, from /proc (ru_maxrss is the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def inflight(url: str, n: int, transport: str = "aiohttp") -> dict[str, float]:
    """``n`` calls at once against an endpoint that answers none until they stop coming, then all."""
    base, _, endpoint = url.rpartition("/")
    before = rss_mb()
    config = ClientConfig(
        base_url=base,
        service_name="mem",
        timeout_seconds=60,
        bulkhead_max_concurrent=n,
        bulkhead_max_waiting=0,
        transport=transport,  # type: ignore[arg-type] - "aiohttp" or "lean", from the modes below
    )
    async with BaseServiceClient(config) as client:
        results = await asyncio.gather(*(client.get(endpoint) for _ in range(n)), return_exceptions=True)
    failures = sum(isinstance(r, BaseException) for r in results)
    return {"calls": n, "failures": failures, "rss_before_mb": before, "peak_rss_mb": peak_mb()}


async def inflight_lean(url: str, n: int) -> dict[str, float]:
    """The same ``n`` calls through the client on the lean transport."""
    return await inflight(url, n, "lean")


async def inflight_raw(url: str, n: int) -> dict[str, float]:
    """The same ``n`` calls with raw aiohttp, for comparison: what the sockets alone cost."""
    import aiohttp  # noqa: PLC0415

    before = rss_mb()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def one() -> object:
            async with session.get(url) as resp:
                return await resp.json()

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    failures = sum(isinstance(r, BaseException) for r in results)
    return {"calls": n, "failures": failures, "rss_before_mb": before, "peak_rss_mb": peak_mb()}


async def growth(url: str, n: int) -> dict[str, float]:
    """``n`` calls, 64 at a time: RSS after a warm-up of 5% against RSS at the end."""
    base, _, endpoint = url.rpartition("/")
    # 64 workers: the bulkhead admits them all (the seed's default is 10).
    config = ClientConfig(
        base_url=base,
        service_name="mem",
        timeout_seconds=10,
        bulkhead_max_concurrent=64,
        bulkhead_max_waiting=0,
    )
    warm = max(1000, n // 20)
    async with BaseServiceClient(config) as client:
        remaining = warm

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await client.get(endpoint)

        await asyncio.gather(*(worker() for _ in range(64)))
        after_warmup = rss_mb()
        remaining = n - warm
        await asyncio.gather(*(worker() for _ in range(64)))
        at_end = rss_mb()
    return {
        "calls": n,
        "rss_after_warmup_mb": after_warmup,
        "rss_at_end_mb": at_end,
        "growth_mb": at_end - after_warmup,
    }


if __name__ == "__main__":
    logging.getLogger("app.clients").setLevel(logging.WARNING)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    modes = {
        "inflight": inflight,
        "inflight-lean": inflight_lean,
        "inflight-raw": inflight_raw,
        "growth": growth,
    }
    print(json.dumps(run(modes[mode](url, count))))
