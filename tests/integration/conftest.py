"""Integration fixtures: a real redis-server of the test's own, and the transport a client is built on.

In a module marked ``pytestmark = pytest.mark.both_transports`` every test that builds
clients runs twice, on ``aiohttp`` and on ``lean`` (ids ``[aiohttp]``/``[lean]``), with
the same expectations: issue 16 asks the lean transport to be indistinguishable.
``make_client`` builds on the test's ``transport``; a test (or helper) that builds its
``ClientConfig`` itself asks for the ``transport`` fixture and passes it; a gateway test
sets it with ``tests.support.transports.gateway_on``. A guard fails the test if a client
of a marked module was built on another transport, so a construction site that forgot
to pass it cannot quietly turn the ``[lean]`` run into a second aiohttp one. Tests that
build no client (parsers, refusals before any transport) run once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from app.clients import BaseServiceClient, ClientConfig
from app.clients.lean_transport import _DefaultTransport
from app.clients.transport import Transport
from tests.support.redis import RedisServer
from tests.support.transports import on_transport

TRANSPORTS = ("aiohttp", "lean")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_transports: run the module's tests on the aiohttp and the lean transport"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Direct parametrization overrides the ``transport`` fixture below (aiohttp) for the
    # marked modules only; it reaches every test whose fixtures lead to ``transport``
    # (``make_client`` does), and only those.
    if "transport" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_transports"):
        metafunc.parametrize("transport", TRANSPORTS)


@pytest.fixture
def transport() -> str:
    """The transport clients are built on (``ClientConfig.transport``): aiohttp unless the module runs on both."""
    return "aiohttp"


@pytest.fixture
def make_client(
    make_client: Callable[..., BaseServiceClient], transport: str
) -> Callable[..., BaseServiceClient]:
    """The shared ``make_client``, on the test's transport unless the test names one."""
    return on_transport(make_client, transport)


@pytest.fixture(autouse=True)
def _every_client_on_the_transport(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In a ``both_transports`` module: every client a test builds is on the test's transport.

    A test runs on both when its fixtures lead to ``transport``; one that builds no client
    (a parser, a refusal before any transport) runs once. One that builds clients without
    asking for ``transport`` fails here rather than run on aiohttp alone.
    """
    if request.node.get_closest_marker("both_transports") is None:
        yield
        return
    callspec = getattr(request.node, "callspec", None)
    expected = callspec.params.get("transport") if callspec is not None else None
    asked: list[str] = []
    build = _DefaultTransport.__call__

    def recording(
        self: _DefaultTransport, config: ClientConfig, *, session: aiohttp.ClientSession | None = None
    ) -> Transport:
        asked.append(config.transport)
        return build(self, config, session=session)

    monkeypatch.setattr(_DefaultTransport, "__call__", recording)
    yield
    if expected is None:
        assert not asked, "this test builds clients: ask for the transport fixture, and pass it"
    wrong = sorted({t for t in asked if t != expected})
    assert not wrong, f"a client of this [{expected}] test was built on {wrong}: pass it the transport"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port in ``tmp_path``, killed at teardown."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
