"""The gateway keeps its OpenAPI promises: schemathesis, every check, against the gateway and the real upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks, max_response_time
from schemathesis.config import SchemathesisConfig

from app.containers import Container
from app.factory import reset_factory
from app.main import create_app
from settings import load_settings
from tests.support.asgi import serve
from upstreams.analysis_engine.service import AnalysisEngineSettings
from upstreams.analysis_engine.service import create_app as create_ae
from upstreams.ml_workbench.service import MLWorkbenchSettings
from upstreams.ml_workbench.service import create_app as create_ml

#: An admin token, so the admin routes refuse schemathesis (401) instead of isolating the
#: breakers the other operations need, and so their declared bearer auth is really enforced.
ADMIN_TOKEN = "xQ7vT2-schemathesis-admin-token"

load_all_checks()
#: `--checks all`: every built-in check (max_response_time needs a limit, so it is left out).
ALL_CHECKS = [c for c in CHECKS.get_all() if not is_check_class(c) and c is not max_response_time]


class Platform:
    """The reference upstreams and the gateway, served by uvicorn on a thread of their own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.base = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="openapi-platform", daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            ae = await stack.enter_async_context(serve(create_ae(AnalysisEngineSettings(app_env="test"))))
            ml = await stack.enter_async_context(serve(create_ml(MLWorkbenchSettings(app_env="test"))))
            self.base = await stack.enter_async_context(self._gateway(ae, ml))
            self._ready.set()
            await self._stop.wait()

    @contextlib.asynccontextmanager
    async def _gateway(self, ae: str, ml: str) -> AsyncIterator[str]:
        patch = self.monkeypatch
        patch.setenv("APP_ENV", "test")
        patch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", f"{ae}/api/v1")
        patch.setenv("APP_ML_WORKBENCH__BASE_URL", f"{ml}/api/v1")
        patch.setenv("APP_ADMIN_TOKEN", ADMIN_TOKEN)
        container = Container()
        container.settings.override(load_settings())
        async with serve(create_app(container)) as base:
            yield base

    def __enter__(self) -> Platform:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None or not self.base:
            raise RuntimeError("the platform did not start") from self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as monkeypatch, Platform(monkeypatch) as platform:
        yield platform.base


def _openapi() -> dict[str, object]:
    """The gateway's OpenAPI document on the test profile, built without serving it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("APP_ENV", "test")
        container = Container()
        container.settings.override(load_settings())
        document = create_app(container).openapi()
    reset_factory()  # create_app made this container the factory's; no test should see it
    return document


# Loaded at import: schemathesis's lazy loader (from_fixture) does not run on pytest 9.
OPENAPI = _openapi()
#: Deterministic and bounded: a fixed seed, 25 examples an operation, no example database,
#: and the status stream read for two events (one a second), not twenty.
CONFIG = SchemathesisConfig.from_str(
    """
seed = 15
max-stream-events = 2
request-timeout = 10
suppress-health-check = ["too_slow", "filter_too_much"]

[generation]
max-examples = 25
deterministic = true
database = "none"
"""
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


@schema.hook
def filter_query(ctx, query) -> bool:
    """Skip MACD with ``fast`` not below ``slow``: the one rule of ``indicators`` a pattern cannot say.

    The parameter's description states it and the gateway answers 422; without this filter the
    positive-data check would count that 422 as a valid request refused.
    """
    if query is None:
        return True
    text = query.get("indicators")
    if not isinstance(text, str):
        return True
    for item in text.split(","):
        name, *args = item.split(":")
        fast = args[0] if args else "12"  # the defaults stand in for what is left out
        slow = args[1] if len(args) > 1 else "26"
        if name.upper() == "MACD" and fast.isdigit() and slow.isdigit() and int(fast) >= int(slow):
            return False
    return True


def test_every_kind_of_check_runs() -> None:
    """The checks passed are schemathesis's whole set: conformance, negative and positive data, methods, auth."""
    names = {check.__name__ for check in ALL_CHECKS}
    assert names >= {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    }


def test_the_served_document_is_the_one_tested(gateway_url) -> None:
    """The running gateway serves the very OpenAPI document the operations below are generated from."""
    with urllib.request.urlopen(f"{gateway_url}/openapi.json", timeout=10) as resp:
        served = json.load(resp)
    assert served == json.loads(json.dumps(OPENAPI))


@schema.parametrize()
@settings(deadline=None)
def test_every_operation_keeps_its_openapi_contract(case, gateway_url) -> None:
    """Each operation answers only documented statuses, content types, headers and bodies, rejects what its schema refuses, never 5xx on valid input."""
    case.call_and_validate(base_url=gateway_url, checks=ALL_CHECKS)
