"""A load generator in its own process: ``python -m benchmarks.loadgen URL CONCURRENCY N``."""

from __future__ import annotations

import json
import sys
import time

import aiohttp

from app.runtime import run


async def main(url: str, concurrency: int, total: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = 0
        errors = 0

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                async with session.get(url) as resp:
                    await resp.read()
                    errors += resp.status != 200

        import asyncio  # noqa: PLC0415

        remaining = min(2000, total)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        remaining = total
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"req_s": total / (time.perf_counter() - started), "errors": errors}


if __name__ == "__main__":
    print(json.dumps(run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))
