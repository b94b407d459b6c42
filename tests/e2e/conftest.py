"""The whole platform as three real processes on free ports, for the end-to-end tests."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from launcher.platform import Plan, Platform, PortInUseError, plan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_platform(logs: Path, *, ports: int = 3, **plan_args: Any) -> tuple[Platform, Plan, tuple[int, ...]]:
    """``plan(*free ports, **plan_args)`` started, each service logging into ``logs``.

    Tried up to 3 times: the ports derived from the free ones (the first + 10 for a
    second instance or replica) were not checked free, and may fall on each other.
    """
    for _ in range(3):
        chosen = tuple(free_port() for _ in range(ports))
        try:
            services = plan(*chosen, **plan_args)
        except ValueError:  # a derived port fell on another service's
            continue
        for service in services:
            service.log_path = logs / f"{service.name}.log"
        running = Platform(services)
        try:
            running.start()
        except PortInUseError:
            running.stop()  # nothing started; this removes its run directory
            continue
        return running, services, chosen
    pytest.fail("no free ports for the platform after 3 tries")


@dataclass
class Running:
    gateway: str
    analysis: str
    workbench: str
    gateway_log: Path

    def log_offset(self) -> int:
        return self.gateway_log.stat().st_size

    def call_records(self, since: int) -> list[dict]:
        """The gateway's per-call JSON log records written after ``since``."""
        with self.gateway_log.open("rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
        records = []
        for line in lines:
            if line.startswith(b"{"):
                record = orjson.loads(line)
                if record.get("logger") == "app.clients" and record.get("level") == "INFO":
                    records.append(record)
        return records


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Iterator[Running]:
    logs = tmp_path_factory.mktemp("platform-logs")
    ports = free_port(), free_port(), free_port()
    # One instance of each upstream: the tests fault "the" Analysis Engine through its chaos
    # endpoint, and a second, healthy instance would take the gateway's calls instead.
    services = plan(*ports, profile="test", ae_replicas=1, mlw_replicas=1)
    for service in services:
        service.log_path = logs / f"{service.name}.log"
    running = Platform(services)
    running.start()
    try:
        yield Running(
            gateway=f"http://127.0.0.1:{ports[0]}",
            analysis=f"http://127.0.0.1:{ports[1]}/api/v1",
            workbench=f"http://127.0.0.1:{ports[2]}/api/v1",
            gateway_log=logs / "gateway.log",
        )
    finally:
        running.stop()
    # Nothing is left behind: every process has exited and every port is free again.
    assert all(s.process is not None and s.process.poll() is not None for s in services)
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed sockets linger in TIME_WAIT
            sock.bind(("127.0.0.1", port))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clean(platform: Running) -> Iterator[Running]:
    """Each test starts and ends with no faults and every breaker closed or due."""
    _reset(platform)
    yield platform
    _reset(platform)


def _reset(platform: Running) -> None:
    """Clear the faults, then close every breaker through the gateway's admin endpoint."""
    for base in (platform.analysis, platform.workbench):
        urllib.request.urlopen(urllib.request.Request(f"{base}/chaos", method="DELETE"), timeout=5).close()
    for name in ("analysis-engine-service", "ml-workbench-service"):
        url = f"{platform.gateway}/api/v1/resilience/{name}/reset"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).close()
    with urllib.request.urlopen(f"{platform.gateway}/health/ready", timeout=2) as resp:
        states = {d["breaker"] for d in orjson.loads(resp.read())["dependencies"].values()}
    assert states == {"closed"}, states
