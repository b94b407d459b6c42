"""Importing the client loads no library that only an off-by-default feature uses; using the feature loads it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Libraries of features that are off by default: shared state (redis, which brings
#: cryptography and OpenTelemetry's metrics SDK), DNS discovery, file watching, and the
#: project's own tracer provider (OpenTelemetry's SDK).
OPTIONAL = ("cryptography", "dns", "opentelemetry.sdk", "redis", "watchfiles")


def _fresh(code: str) -> object:
    """What ``code`` prints as JSON last, run in a new interpreter (nothing imported before it)."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_client_loads_none_of_them() -> None:
    """``import app.clients`` (breaker, discovery, cache and shared-state code included) loads none."""
    loaded = _fresh(
        f"""
        import json, sys
        import app.clients
        print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))
        """
    )
    assert loaded == []


def test_aiobreaker_is_imported_without_redis_which_still_imports_after() -> None:
    """The Redis storage of aiobreaker is a stand-in that refuses to be built; redis imports after."""
    seen = _fresh(
        """
        import json
        import app.resilience.breaker_engine
        import aiobreaker.storage.redis as storage
        try:
            storage.CircuitRedisStorage(None, None)
            refused = ""
        except ImportError as exc:
            refused = str(exc)
        import redis.exceptions
        print(json.dumps([storage.HAS_REDIS_SUPPORT, refused, redis.exceptions.RedisError.__name__]))
        """
    )
    assert seen == [
        False,
        "aiobreaker's CircuitRedisStorage is not loaded here: replicas share a breaker through app.state"
        " (circuit_breaker_shared)",
        "RedisError",
    ]


def test_with_redis_imported_first_aiobreaker_is_left_whole() -> None:
    """A process that imported redis before the client (shared state on) gets aiobreaker's own storage."""
    seen = _fresh(
        """
        import json
        import redis
        import app.resilience.breaker_engine
        import aiobreaker.storage.redis as storage
        print(json.dumps([storage.HAS_REDIS_SUPPORT, storage.CircuitRedisStorage.__module__]))
        """
    )
    assert seen == [True, "aiobreaker.storage.redis"]


def test_each_feature_loads_its_library_when_used() -> None:
    """A DNS discovery URI, a tracer provider of our own and a started shared state each load theirs."""
    loaded = _fresh(
        """
        import asyncio, json, sys
        from app.discovery import parse_discovery
        from app.observability.tracing import configure_tracing
        from app.state import SharedState, SharedStateSettings

        steps = {}
        source = parse_discovery("dns://prices.internal:8080", "http://prices.internal:8080/api")
        steps["dns"] = [type(source).__name__, "dns" in sys.modules]
        before = "opentelemetry.sdk" in sys.modules
        configure_tracing("footprint", "console")
        steps["tracing"] = [before, "opentelemetry.sdk" in sys.modules]

        async def shared():
            # Nothing listens on port 9: start() never fails, it starts degraded.
            state = SharedState(SharedStateSettings(url="redis://127.0.0.1:9/0"))
            before = "redis" in sys.modules
            await state.start()
            await state.aclose()
            return [before, "redis" in sys.modules]

        steps["redis"] = asyncio.run(shared())
        print(json.dumps(steps))
        """
    )
    assert loaded == {"dns": ["DnsSource", True], "tracing": [False, True], "redis": [False, True]}
