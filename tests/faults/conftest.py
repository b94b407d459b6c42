"""The fault-matrix harness: isolated metrics, captured logs, and leak checks after every row.

Every row runs on both transports (the ``transport`` fixture: ``aiohttp``, the default,
and ``lean``), with the same expected outcome: the lean one must be indistinguishable.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from app.clients import BaseServiceClient, ClientConfig
from app.clients.lean_transport import LeanTransport
from app.clients.policies import ClientPolicies
from app.observability.logging import JsonFormatter
from app.observability.metrics import MetricFamilies
from tests.support.transports import on_transport


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Harness:
    """Builds clients whose metrics go to a private registry, and reads back what they recorded."""

    def __init__(self, caplog: pytest.LogCaptureFixture, transport: str = "aiohttp") -> None:
        self.transport = transport
        self.registry = CollectorRegistry()
        self.families = MetricFamilies(self.registry)
        self.caplog = caplog
        self.clients: list[BaseServiceClient] = []

    def client(
        self, base_url: str, cls: type[BaseServiceClient] = BaseServiceClient, **overrides: Any
    ) -> Any:
        fields: dict[str, Any] = {
            "base_url": base_url,
            "service_name": "faulty",
            "timeout_seconds": 0.2,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "retry_jitter": False,
            "circuit_breaker_failure_threshold": 100,
            # The rows send crowds (50, 500 callers) at other policies: the seed's bulkhead
            # (10 + 20 waiting) would turn them away first. Bulkhead rows set their own.
            "bulkhead_max_concurrent": 1000,
            "bulkhead_max_waiting": 1000,
            "transport": self.transport,
        }
        fields.update(overrides)
        config = ClientConfig(**fields)
        client = cls(config, policies=ClientPolicies.from_config(config, families=self.families))
        self.clients.append(client)
        return client

    def metric(self, name: str, **labels: str) -> float:
        labels.setdefault("peer_service", "faulty")
        return self.registry.get_sample_value(name, labels) or 0.0

    def requests(self, outcome: str) -> float:
        """``service_client_requests_total`` for ``outcome``, summed over every label set."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "service_client_requests_total" and sample.labels["outcome"] == outcome:
                    total += sample.value
        return total

    def attempts(self) -> float:
        return sum(
            s.value
            for f in self.registry.collect()
            for s in f.samples
            if s.name == "service_client_attempts_total"
        )

    def call_logs(self) -> list[dict[str, Any]]:
        formatter = JsonFormatter()
        return [
            orjson.loads(formatter.format(r))
            for r in self.caplog.records
            if r.name == "app.clients" and r.levelno == logging.INFO
        ]

    def assert_recorded(self, *, outcome: str, attempts: int, calls: int = 1) -> None:
        """Metrics and the call log agree with what happened."""
        assert self.requests(outcome) == calls
        assert self.attempts() == attempts
        logs = self.call_logs()
        assert len(logs) == calls
        assert sum(r["attempts"] for r in logs) == attempts
        assert {r["outcome"] for r in logs} == {outcome}


@pytest.fixture(params=["aiohttp", "lean"])
def transport(request: pytest.FixtureRequest) -> str:
    """The transport every client of the row uses (``ClientConfig.transport``)."""
    return str(request.param)


@pytest.fixture
def make_client(
    make_client: Callable[..., BaseServiceClient], transport: str
) -> Callable[..., BaseServiceClient]:
    """The shared ``make_client``, on this row's transport."""
    return on_transport(make_client, transport)


@pytest.fixture
async def harness(caplog: pytest.LogCaptureFixture, transport: str) -> AsyncIterator[Harness]:
    caplog.set_level(logging.INFO, logger="app.clients")
    tasks_before = asyncio.all_tasks()
    fds_before = open_fds()
    h = Harness(caplog, transport)
    yield h
    for client in h.clients:
        session = client._session
        if session is not None and session.connector is not None:
            assert len(session.connector._acquired) == 0, "a connection was not released"
        if isinstance(client._transport, LeanTransport):
            assert client._transport.pool.busy == 0, "a connection was not released"
        await client.close()
    # Let the peers see the closes, then nothing may be left: no task, no descriptor.
    for _ in range(50):
        await asyncio.sleep(0.02)
        gc.collect()
        if open_fds() <= fds_before and not (asyncio.all_tasks() - tasks_before - {asyncio.current_task()}):
            break
    assert asyncio.all_tasks() - tasks_before - {asyncio.current_task()} == set(), "a task leaked"
    assert open_fds() <= fds_before, "a file descriptor leaked"
