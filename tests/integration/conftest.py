"""Integration fixtures: a real redis-server of the test's own (skipped, with the reason, where there is none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port in ``tmp_path``, killed at teardown."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
