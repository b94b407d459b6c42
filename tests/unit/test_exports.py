"""Every package re-exports its public API through a sorted, complete ``__all__``."""

from __future__ import annotations

import importlib

import pytest

import app
from app import clients

PACKAGES = ["app.clients", "app.resilience", "app.observability", "app.api", "settings"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name) -> None:
    """``__all__`` is sorted, has no duplicates, and each name exists."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for item in exported:
        assert hasattr(module, item), item


def test_clients_exports_are_complete() -> None:
    """Every name a public app.clients module exports is re-exported by app.clients."""
    public = ["analysis_engine", "base", "config", "exceptions", "factory", "ml_workbench"]
    missing = [
        f"{name}.{item}"
        for name in public
        for item in importlib.import_module(f"app.clients.{name}").__all__
        if item not in clients.__all__
    ]
    assert missing == []


def test_every_error_of_the_design_table_is_exported() -> None:
    """The DESIGN §4 error classes are all importable from app.clients."""
    names = [
        "ServiceError",
        "ServiceUnavailableError",
        "ServiceTimeoutError",
        "DataValidationError",
        "AuthenticationError",
        "ClientError",
        "ClientConnectionError",
        "ClientTimeoutError",
        "ClientValidationError",
        "ClientAuthenticationError",
        "ResourceNotFoundError",
        "RateLimitedError",
        "ServerError",
        "ClientResponseError",
        "ResponseDecodeError",
        "CircuitBreakerOpenError",
        "BulkheadFullError",
        "RetryExhaustedError",
    ]
    assert set(names) <= set(clients.__all__)
    assert app.clients is clients
