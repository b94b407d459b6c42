"""Many instances: one measured run, ``python -m benchmarks.fleet CONCURRENCY N ENDPOINT BASE [BASE ...]``.

One base URL gives the single-instance client (``base_url``, no balancer); several give
the client over them all (``instances=``, P2C over peak-EWMA). Either is variant 3's
client (every policy, metrics, the JSON call log to a file) on asyncio's loop, and every
call's latency is taken. Prints one JSON line: requests per second, p50 and p99 latency
(ms), CPU µs per request and each instance's share of the measured calls, in the
order given.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any

from benchmarks.worker import WARMUP, drive


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(bases: list[str], endpoint: str, concurrency: int, total: int) -> dict[str, Any]:
    from app.clients import BaseServiceClient, ClientConfig  # noqa: PLC0415
    from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415

    log_file = open(tempfile.mktemp(prefix="bench-fleet-", suffix=".log"), "w")  # noqa: S306, SIM115, ASYNC230
    configure_logging("INFO", json=True, stream=log_file)
    where: dict[str, Any] = {"base_url": bases[0]} if len(bases) == 1 else {"instances": bases}
    client = BaseServiceClient(
        ClientConfig(
            **where,
            service_name="bench",
            timeout_seconds=10,
            enable_metrics=True,
            enable_request_logging=True,
            bulkhead_max_concurrent=256,
        )
    )
    balancer = client.policies.balancer
    latencies: list[float] = []
    clock = time.perf_counter

    async def call() -> Any:
        return await client.get(endpoint)

    async def timed() -> None:
        started = clock()
        await client.get(endpoint)
        latencies.append(clock() - started)

    def counts() -> dict[str, int]:
        """Attempts ended per instance so far (the balancer's own count)."""
        return {} if balancer is None else {i.url: i.requests for i in balancer.instances}

    await drive(call, concurrency, min(WARMUP, total))
    before = counts()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await drive(timed, concurrency, total)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    after = counts()
    await client.close()
    stop_logging()
    log_file.close()
    if balancer is None:
        shares = [1.0]
    else:  # in the order the bases were given
        done = {url.rstrip("/"): n - before.get(url, 0) for url, n in after.items()}
        calls = sum(done.values()) or 1
        shares = [done.get(base.rstrip("/"), 0) / calls for base in bases]
    latencies.sort()
    return {
        "req_s": total / wall,
        "p50_ms": _quantile(latencies, 0.50) * 1000,
        "p99_ms": _quantile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "cpu_us": cpu / total * 1e6,
        "shares": shares,
    }


def main() -> None:
    concurrency, total, endpoint, bases = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    print(json.dumps(asyncio.run(measure(bases, endpoint, concurrency, total))))


if __name__ == "__main__":
    main()
