"""The factory path shares the container's singletons; overrides get their own policies."""

from __future__ import annotations

import pytest

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    ClientConfig,
    MLWorkbenchClient,
    get_analysis_engine_client,
    get_client,
    get_ml_workbench_client,
    register_client_config,
)
from app.clients.factory import use_container
from app.containers import Container


@pytest.fixture
def container(monkeypatch) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    c = Container()
    use_container(c)
    return c


async def test_factory_clients_share_the_container_singletons(container) -> None:
    """Both paths give the same breaker, bulkhead and retry policy."""
    client = get_analysis_engine_client()
    assert isinstance(client, AnalysisEngineClient)
    assert client is get_analysis_engine_client()
    assert client is get_client(AnalysisEngineClient, "analysis-engine-service")
    assert client.breaker is container.analysis_engine.breaker()
    assert client.bulkhead is container.analysis_engine.bulkhead()
    assert client.retry is container.analysis_engine.retry()
    ml = get_ml_workbench_client()
    assert isinstance(ml, MLWorkbenchClient)
    assert ml.breaker is container.ml_workbench.breaker()
    assert ml.breaker is not client.breaker
    await client.close()
    await ml.close()


async def test_config_override_gives_a_separate_client(container) -> None:
    """A config_override makes a new client with its own breaker and bulkhead."""
    shared = get_analysis_engine_client()
    custom = get_analysis_engine_client({"max_retries": 0, "timeout_seconds": 0.5})
    assert custom is not shared
    assert custom.breaker is not shared.breaker
    assert custom.bulkhead is not shared.bulkhead
    assert custom.config.max_retries == 0
    assert custom.config.base_url == shared.config.base_url  # the rest from the service's config
    await custom.close()
    await shared.close()


def test_unknown_service_names_the_known_ones(container) -> None:
    """An unknown name is a KeyError listing the known services."""
    with pytest.raises(KeyError, match="analysis_engine, ml_workbench"):
        get_client(BaseServiceClient, "pricing")


async def test_registered_configs(container) -> None:
    """register_client_config adds a service, or re-points one of the container's."""
    register_client_config("pricing", {"base_url": "http://127.0.0.1:9100/", "service_name": "pricing"})
    pricing = get_client(BaseServiceClient, "pricing")
    assert pricing.config.service_name == "pricing"
    assert pricing is get_client(BaseServiceClient, "pricing")

    register_client_config(
        "analysis_engine",
        ClientConfig(base_url="http://127.0.0.1:9200/", service_name="analysis-engine-service"),
    )
    moved = get_analysis_engine_client()
    assert moved.config.base_url == "http://127.0.0.1:9200/"
    assert moved.breaker is container.analysis_engine.breaker()
    await pricing.close()
    await moved.close()


def test_default_container_is_built_on_first_use(monkeypatch) -> None:
    """Without create_app, the factory builds a container from the environment."""
    monkeypatch.setenv("APP_ENV", "test")
    client = get_analysis_engine_client()
    assert client.config.timeout_seconds == 1.0  # from the test profile
