"""A client whose instances come from discovery: a file, DNS SRV records and etcd, each real."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.clients import BaseServiceClient, ClientConfig, ClientError
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from tests.support.discovery import eventually
from tests.support.dnsmasq import ZONE, Dnsmasq, Srv
from tests.support.etcd import Etcd
from tests.support.upstream import Upstream
from tests.support.upstream import json as answer

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

UNAVAILABLE = answer({"detail": "down"}, status=503)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Upstream, Upstream]]:
    servers = (Upstream(), Upstream())
    for index, server in enumerate(servers):
        server.route("*", answer({"server": index}))
        await server.server.start_server()
    try:
        yield servers
    finally:
        for server in servers:
            await server.server.close()


@pytest.fixture
async def discovering(transport: str) -> AsyncIterator[Callable[..., BaseServiceClient]]:
    made: list[BaseServiceClient] = []

    def build(
        discovery: str, base_url: str = "http://127.0.0.1:1/api/v1", **fields: Any
    ) -> BaseServiceClient:
        config = ClientConfig(
            base_url=base_url,
            discovery=discovery,
            service_name="discovered",
            max_retries=2,
            retry_base_delay=0.001,
            retry_max_delay=0.01,
            enable_request_logging=False,
            transport=transport,
            **fields,
        )
        policies = ClientPolicies.from_config(config, families=MetricFamilies(CollectorRegistry()))
        client = BaseServiceClient(config, policies=policies)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


def write(path: Path, urls: list[str]) -> None:
    """Replace the instances file atomically, as the launcher and config tools do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"instances": urls}))
    os.replace(tmp, path)


async def served_by(client: BaseServiceClient, calls: int = 30) -> set[int]:
    return {(await client.get("who"))["server"] for _ in range(calls)}


async def test_file_discovery_adds_removes_and_keeps_the_last_good_set(
    tmp_path: Path, pair: tuple[Upstream, Upstream], discovering: Callable[..., BaseServiceClient]
) -> None:
    a, b = pair
    path = tmp_path / "instances.json"
    write(path, [a.base_url])
    client = discovering(path.as_uri())
    assert await served_by(client) == {0}  # the first read is there before the first call
    write(path, [a.base_url, b.base_url])
    await eventually(lambda: len(client.policies.balancer.urls()) == 2, what="B added")  # type: ignore[union-attr]
    assert await served_by(client, 200) == {0, 1}
    write(path, [b.base_url])
    await eventually(lambda: len(client.policies.balancer.urls()) == 1, what="A removed")  # type: ignore[union-attr]
    hits_a = sum(a.hits.values())
    assert await served_by(client) == {1}
    assert sum(a.hits.values()) == hits_a  # A drained: no new calls
    for bad in ('{"instances": []}', "{not json", '{"instances": ["ftp://x/"]}'):
        path.write_text(bad)
        await asyncio.sleep(0.3)
        assert await served_by(client, 10) == {1}  # the last good set stays
    status = client.policies.fleet_status()
    assert status is not None
    assert status["discovery"]["updates"]["rejected"] >= 3
    # A Kubernetes ConfigMap swap: the file is a symlink into a directory that is replaced.
    data = tmp_path / "..2026_11_26"
    data.mkdir()
    write(data / "instances.json", [a.base_url])
    link = tmp_path / "..data"
    link.symlink_to(data.name)
    path.unlink()
    path.symlink_to(Path("..data") / "instances.json")
    await eventually(lambda: client.policies.balancer.urls() == (a.base_url + "/",), what="symlink swap")  # type: ignore[union-attr]
    assert await served_by(client) == {0}


async def test_etcd_put_and_delete_reach_the_client(
    tmp_path: Path, pair: tuple[Upstream, Upstream], discovering: Callable[..., BaseServiceClient]
) -> None:
    etcd = Etcd(tmp_path)
    etcd.start()
    try:
        a, b = pair
        etcd.put("/services/quotes/a", a.base_url)
        client = discovering(f"etcd://127.0.0.1:{etcd.port}/services/quotes/")
        assert await served_by(client) == {0}  # the first call waits for the first read
        etcd.put("/services/quotes/b", b.base_url)
        etcd.delete("/services/quotes/a")
        await eventually(lambda: client.policies.balancer.urls() == (b.base_url + "/",), what="watch")  # type: ignore[union-attr]
        assert await served_by(client) == {1}
    finally:
        etcd.kill()


async def test_dns_is_asked_again_at_once_when_every_instance_fails(
    tmp_path: Path, pair: tuple[Upstream, Upstream], discovering: Callable[..., BaseServiceClient]
) -> None:
    a, b = pair
    dns = Dnsmasq(tmp_path, ttl=600)
    name = f"_quotes._tcp.{ZONE}"
    dns.set_records(srv=[Srv(name, f"a.{ZONE}", a.server.port)], hosts={f"a.{ZONE}": ["127.0.0.1"]})
    dns.start()
    try:
        # A long TTL: only "every instance failed" makes it ask again before ten minutes.
        client = discovering(
            f"dns+srv://{name}?nameserver={dns.nameserver}",
            discovery_min_ttl_seconds=0.2,
            discovery_max_ttl_seconds=600,
            circuit_breaker_failure_threshold=1000,
        )
        assert await served_by(client, 5) == {0}
        dns.set_records(srv=[Srv(name, f"b.{ZONE}", b.server.port)], hosts={f"b.{ZONE}": ["127.0.0.1"]})
        a.route("*", UNAVAILABLE)  # the one instance it knows fails: the answer may be stale

        async def reaches_b() -> bool:
            try:
                return (await client.get("who"))["server"] == 1
            except ClientError:  # A's 503s until the new answer arrives
                return False

        deadline = asyncio.get_running_loop().time() + 5
        while not await reaches_b():
            assert asyncio.get_running_loop().time() < deadline, "DNS was not asked again"
            await asyncio.sleep(0.05)
    finally:
        dns.stop()


async def test_sync_twins_alone_start_and_stop_the_discovery(
    tmp_path: Path, pair: tuple[Upstream, Upstream], discovering: Callable[..., BaseServiceClient]
) -> None:
    etcd = Etcd(tmp_path)
    etcd.start()
    try:
        a, _ = pair
        etcd.put("/services/quotes/a", a.base_url)
        client = discovering(f"etcd://127.0.0.1:{etcd.port}/services/quotes/")
        answers = await asyncio.to_thread(lambda: [client.get_sync("who") for _ in range(3)])
        assert answers == [{"server": 0}] * 3  # the sync side's loop watched etcd for them
        runner = client.policies.discovery
        assert runner is not None
        assert runner.running
        await client.close()
        assert not runner.running  # closed with the sync side that started it
    finally:
        etcd.kill()
