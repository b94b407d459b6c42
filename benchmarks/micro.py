"""In-process micro-benchmarks, no network: rejection costs and the pipeline's own overhead.

``python -m benchmarks.micro`` prints one JSON object (microseconds per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from app.clients import BaseServiceClient, BulkheadFullError, CircuitBreakerOpenError, ClientConfig
from app.resilience import Bulkhead, CallRecord, CircuitBreakerPolicy, Deadline, Pipeline, RetryPolicy


def _client(**overrides: Any) -> BaseServiceClient:
    fields: dict[str, Any] = {"base_url": "http://127.0.0.1:9/api", "service_name": "micro", **overrides}
    return BaseServiceClient(ClientConfig(**fields))


async def _per_call(fn: Any, n: int) -> float:
    for _ in range(min(n, 2000)):
        await fn()
    started = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - started) / n * 1e6


async def open_breaker_rejection(n: int) -> float:
    """A call refused by an open breaker: CircuitBreakerOpenError raised and counted."""
    client = _client()
    client.breaker.isolate()

    async def call() -> None:
        with contextlib.suppress(CircuitBreakerOpenError):
            await client.get("prices")

    try:
        return await _per_call(call, n)
    finally:
        await client.close()


async def bulkhead_rejection(n: int) -> float:
    """A call refused by a full bulkhead (every slot taken, no queue): BulkheadFullError."""
    client = _client(bulkhead_max_concurrent=1, bulkhead_max_waiting=0)
    assert client.bulkhead.try_acquire()

    async def call() -> None:
        with contextlib.suppress(BulkheadFullError):
            await client.get("prices")

    try:
        return await _per_call(call, n)
    finally:
        client.bulkhead.release()
        await client.close()


async def pipeline_overhead(n: int) -> float:
    """The pipeline (bulkhead, deadline, retry, breaker, attempt timeout) around a trivial attempt."""
    pipeline = Pipeline(
        bulkhead=Bulkhead(100, 100),
        breaker=CircuitBreakerPolicy(),
        retry=RetryPolicy(),
        attempt_timeout=5.0,
    )

    async def attempt(timeout: float) -> int:
        return 1

    async def call() -> None:
        record = CallRecord("micro", "GET", "prices", "id")
        await pipeline.execute(attempt, record, Deadline.after(pipeline.clock, 10.0), idempotent=True)

    return await _per_call(call, n)


async def main(n: int) -> dict[str, float]:
    logging.getLogger("app.clients").setLevel(logging.WARNING)
    return {
        "open_breaker_rejection_us": await open_breaker_rejection(n),
        "bulkhead_full_rejection_us": await bulkhead_rejection(n),
        "pipeline_overhead_us": await pipeline_overhead(n),
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))))
