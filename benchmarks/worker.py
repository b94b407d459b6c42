"""One measured run in its own process: ``python -m benchmarks.worker VARIANT URL CONCURRENCY N``.

Prints one JSON line: requests per second, CPU microseconds per request (process time
over requests, all threads included) and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from benchmarks.variants import VARIANTS

WARMUP = 1000


async def drive(call, concurrency: int, total: int) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(variant: str, url: str, concurrency: int, total: int) -> dict[str, float]:
    _, factory, _ = VARIANTS[variant]
    call, close = await factory(url)
    await drive(call, concurrency, min(WARMUP, total))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await drive(call, concurrency, total)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await close()
    return {
        "req_s": total / wall,
        "cpu_us": cpu / total * 1e6,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    variant, url, concurrency, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    uses_uvloop = VARIANTS[variant][2]
    if uses_uvloop:
        from app.runtime import run  # noqa: PLC0415

        result = run(measure(variant, url, concurrency, total))
    else:
        result = asyncio.run(measure(variant, url, concurrency, total))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
