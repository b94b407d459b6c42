"""Every package re-exports its public API through a sorted, complete ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import app
import launcher
import settings
import upstreams
from app import clients

PACKAGES = [
    "app.auth",
    "app.cache",
    "app.clients",
    "app.resilience",
    "app.observability",
    "app.api",
    "app.errors",
    "app.factory",
    "settings",
]


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
    """Every name a public app.clients module exports, and every error of app.errors, is re-exported by app.clients."""
    public = ["analysis_engine", "base", "config", "ml_workbench", "operations"]
    missing = [
        f"{name}.{item}"
        for name in public
        for item in importlib.import_module(f"app.clients.{name}").__all__
        if item not in clients.__all__
    ]
    errors = importlib.import_module("app.errors")
    missing += [
        f"errors.{item}"
        for item in errors.__all__
        if (isinstance(getattr(errors, item), type) and item not in clients.__all__)
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


def test_every_module_all_is_sorted() -> None:
    """Every module of app/, settings/, upstreams/ and launcher/ that has ``__all__`` keeps it sorted."""
    unsorted = []
    for package in (app, settings, upstreams, launcher):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue  # running it would start a server
            module = importlib.import_module(info.name)
            names = list(getattr(module, "__all__", []))
            if names != sorted(names):
                unsorted.append(info.name)
    assert unsorted == []
