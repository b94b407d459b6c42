"""Endpoint templates are filled safely and can never leave the base URL."""

from __future__ import annotations

import pytest

from app.clients.urls import EndpointResolver

BASE = "http://127.0.0.1:8001/api/v1/"


@pytest.fixture
def resolver() -> EndpointResolver:
    return EndpointResolver(BASE)


def test_plain_and_templated_endpoints(resolver) -> None:
    """Placeholders fill from path_params; a leading slash stays under the base path."""
    assert str(resolver.resolve("models")) == BASE + "models"
    assert str(resolver.resolve("/models")) == BASE + "models"
    url = resolver.resolve("models/{model_id}/predict", {"model_id": "m-1"})
    assert str(url) == BASE + "models/m-1/predict"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a/b", "a%2Fb"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("x?y=1#z", "x%3Fy%3D1%23z"),
        ("EUR USD", "EUR%20USD"),
        ("%2e%2e", "%252e%252e"),
    ],
)
def test_values_are_one_encoded_segment(resolver, value, encoded) -> None:
    """A value can never add segments, a query or a fragment."""
    url = resolver.resolve("prices/{symbol}", {"symbol": value})
    assert url.raw_path == "/api/v1/prices/" + encoded
    assert url.raw_query_string == ""
    assert str(url).startswith(BASE)


@pytest.mark.parametrize(
    "template",
    [
        "http://evil.example/x",
        "//evil.example/x",
        "../admin",
        "models/../../admin",
        "models/%2e%2e/admin",
        "./models",
        "models?x=1",
        "models#frag",
        "models\\..\\admin",
        "mailto:someone",
    ],
)
def test_escaping_templates_are_refused(resolver, template) -> None:
    """Absolute URLs, dot segments, queries and backslashes are refused before any send."""
    with pytest.raises(ValueError, match="endpoint"):
        resolver.resolve(template)


def test_missing_and_unexpected_params_are_refused(resolver) -> None:
    """Every placeholder needs a value, and every value a placeholder."""
    with pytest.raises(ValueError, match="missing path params \\['id'\\]"):
        resolver.resolve("items/{id}")
    with pytest.raises(ValueError, match="unexpected \\['other'\\]"):
        resolver.resolve("items/{id}", {"id": 1, "other": 2})
    with pytest.raises(ValueError, match="empty"):
        resolver.resolve("items/{id}", {"id": ""})


def test_literal_braces_survive(resolver) -> None:
    """Only ``{name}`` placeholders are filled."""
    assert resolver.resolve("a/{id}/b", {"id": 3}).raw_path == "/api/v1/a/3/b"
