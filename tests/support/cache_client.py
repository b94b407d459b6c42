"""A replica in a process of its own: a client with the Redis response cache, calling one GET N times.

Run as ``python -m tests.support.cache_client REDIS_URL BASE_URL PATH CALLS`` from the
repository's root. It starts a ``SharedState`` for the Redis, waits until Redis has
answered it once (a replica that is still degraded uses no shared store), builds a
``BaseServiceClient`` with ``cache_store="redis"`` on it, calls ``GET PATH`` ``CALLS`` times
and prints one JSON line: the answers and the cache's status.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from app.clients import BaseServiceClient, ClientConfig
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from app.state import SharedState, SharedStateSettings

SERVICE = "cached-svc"


async def run(redis_url: str, base_url: str, path: str, calls: int) -> dict[str, Any]:
    """Every answer of ``calls`` GETs of ``path`` through a Redis-cached client, and the cache's status."""
    state = SharedState(
        # A generous deadline: a loaded test machine must not turn a hit into a miss here.
        SharedStateSettings(url=redis_url, deadline_seconds=0.5),
        registry=CollectorRegistry(),
    )
    await state.start()
    try:
        ends = time.monotonic() + 10
        while state.degraded:
            if time.monotonic() > ends:
                raise RuntimeError("redis never answered the shared state")
            await asyncio.sleep(0.01)
        config = ClientConfig(
            base_url=base_url,
            service_name=SERVICE,
            cache_enabled=True,
            cache_store="redis",
            cache_max_bytes=1024 * 1024,
            max_retries=0,
            timeout_seconds=5,
        )
        policies = ClientPolicies.from_config(
            config, families=MetricFamilies(CollectorRegistry()), shared_state=state
        )
        assert policies.cache is not None
        async with BaseServiceClient(config, policies=policies) as client:
            answers = [await client.get(path) for _ in range(calls)]
        return {"answers": answers, "status": policies.cache.status()}
    finally:
        await state.aclose()


def main(argv: list[str]) -> None:
    """Parse the arguments, run, print the JSON line."""
    redis_url, base_url, path, calls = argv
    result = asyncio.run(run(redis_url, base_url, path, int(calls)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
