"""Redaction: secret-looking keys and registered secret values never survive into log text."""

from __future__ import annotations

import pytest

from app.observability.redaction import REDACTED, is_secret_key, redact, register_secret, scrub, truncate


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "X-API-Key",
        "Authorization",
        "access_token",
        "password",
        "db_passwd",
        "Cookie",
        "client_secret",
    ],
)
def test_secret_looking_keys(key) -> None:
    """Keys that name credentials are recognised, whatever their case."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["symbol", "timeframe", "limit", "page"])
def test_ordinary_keys(key) -> None:
    """Ordinary keys are left alone."""
    assert not is_secret_key(key)


def test_redact_walks_nested_json() -> None:
    """Nested dicts and lists are redacted by key; other values are kept."""
    data = {"user": "ann", "auth": {"token": "t-1", "scopes": ["a"]}, "items": [{"password": "p", "n": 1}]}
    assert redact(data) == {"user": "ann", "auth": REDACTED, "items": [{"password": REDACTED, "n": 1}]}


def test_registered_secrets_are_scrubbed_from_any_text() -> None:
    """A registered value is removed wherever it appears, longest first."""
    register_secret("sk-unit-test-abcdef")
    register_secret("sk-unit-test-abcdef-longer")
    assert scrub("key=sk-unit-test-abcdef-longer and sk-unit-test-abcdef") == f"key={REDACTED} and {REDACTED}"
    assert redact({"note": "sent sk-unit-test-abcdef"}) == {"note": f"sent {REDACTED}"}


def test_short_values_are_not_registered() -> None:
    """Values too short to scrub safely are ignored (they would mangle ordinary text)."""
    register_secret("abc")
    assert scrub("abc abc") == "abc abc"


def test_truncate_marks_the_cut() -> None:
    """Long text is cut at the limit and says how much was dropped."""
    assert truncate("x" * 10, 4) == "xxxx…[6 more]"
    assert truncate("short", 10) == "short"
