"""Binding a client subclass to an upstream's name: one line, read by the container."""

from __future__ import annotations

import pytest

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    MLWorkbenchClient,
    client_class_for,
    register_client_class,
    unregister_client_class,
    upstream_client,
)
from app.clients.registry import default_service_name


@pytest.fixture(autouse=True)
def _forget_test_bindings():
    yield
    for name in ("widgets", "gadgets"):
        unregister_client_class(name)


def test_the_gateway_clients_are_bound_to_their_names() -> None:
    """The Analysis Engine and ML Workbench clients are entries like any other."""
    assert client_class_for("analysis_engine") is AnalysisEngineClient
    assert client_class_for("ml_workbench") is MLWorkbenchClient


def test_the_decorator_binds_and_returns_the_class() -> None:
    """@upstream_client("widgets") binds the class and leaves it as it was."""

    @upstream_client("widgets")
    class WidgetsClient(BaseServiceClient):
        """Client of the widgets service."""

    assert client_class_for("widgets") is WidgetsClient
    assert WidgetsClient.__name__ == "WidgetsClient"


def test_an_unbound_name_gets_the_base_client() -> None:
    """With nothing bound, the container builds a BaseServiceClient."""
    assert client_class_for("gadgets") is BaseServiceClient


def test_a_second_class_for_a_bound_name_is_refused() -> None:
    """Two modules claiming one upstream is a mistake, seen at import; the same class again is fine."""

    class First(BaseServiceClient):
        """One."""

    class Second(BaseServiceClient):
        """Two."""

    register_client_class("widgets", First)
    register_client_class("widgets", First)
    with pytest.raises(ValueError, match=r"'widgets' is already served by .*First"):
        register_client_class("widgets", Second)
    unregister_client_class("widgets")
    register_client_class("widgets", Second)
    assert client_class_for("widgets") is Second


def test_a_reloaded_module_rebinds_its_class() -> None:
    """A class of the same module and name (a reload) replaces the old binding without an error."""

    def make() -> type[BaseServiceClient]:
        class Widgets(BaseServiceClient):
            """Made twice, as a reload would."""

        return Widgets

    old, new = make(), make()
    register_client_class("widgets", old)
    register_client_class("widgets", new)
    assert client_class_for("widgets") is new


@pytest.mark.parametrize("name", ["Widgets", "wid-gets", "1widgets", ""])
def test_names_are_lower_case_identifiers(name) -> None:
    """A name is the <NAME> of APP_UPSTREAMS__<NAME>__...: lower-case letters, digits, '_'."""
    with pytest.raises(ValueError, match="upstream name"):
        register_client_class(name, BaseServiceClient)


def test_only_service_clients_are_bound() -> None:
    """Anything but a BaseServiceClient subclass is a TypeError."""
    with pytest.raises(TypeError, match="not a BaseServiceClient subclass"):
        register_client_class("widgets", dict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("pricing", "pricing-service"),
        ("analysis_engine", "analysis-engine-service"),
        ("ml_workbench", "ml-workbench-service"),
    ],
)
def test_the_default_service_name(name, service) -> None:
    """A configured upstream without a service_name is "<name>-service", '_' as '-': the gateway's own follow it."""
    assert default_service_name(name) == service
