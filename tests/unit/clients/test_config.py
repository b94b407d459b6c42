"""ClientConfig: the documented defaults, and invalid values refused with the field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.clients import BaseServiceClient, ClientConfig


def test_defaults() -> None:
    """The documented defaults, and the issue's added fields."""
    cfg = ClientConfig(base_url="http://127.0.0.1:8001/api/v1")
    assert cfg.base_url == "http://127.0.0.1:8001/api/v1/"
    assert cfg.timeout_seconds == 30.0
    assert cfg.total_timeout_seconds is None
    assert cfg.api_key is None
    assert cfg.api_key_header == "X-API-Key"
    assert (cfg.max_retries, cfg.retry_base_delay, cfg.retry_max_delay) == (3, 0.5, 10.0)
    assert (cfg.retry_backoff_factor, cfg.retry_jitter) == (2.0, True)
    assert cfg.retry_on_status == frozenset({429, 502, 503, 504})
    assert cfg.circuit_breaker_failure_threshold == 5
    assert cfg.circuit_breaker_reset_timeout_seconds == 30.0
    assert cfg.circuit_breaker_half_open_max_calls == 1
    assert (cfg.bulkhead_max_concurrent, cfg.bulkhead_max_waiting) == (100, 100)
    assert cfg.max_response_bytes == 10 * 1024 * 1024
    assert cfg.follow_redirects is False
    assert (cfg.enable_metrics, cfg.enable_request_logging) == (True, True)
    assert (cfg.log_request_body, cfg.log_response_body) == (False, False)
    assert cfg.service_name == "service"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "/relative/path"),
        ("base_url", "ftp://host/x"),
        ("base_url", "http://user:pw@host/x"),
        ("base_url", "http://host/x?q=1"),
        ("timeout_seconds", 0),
        ("timeout_seconds", -1),
        ("total_timeout_seconds", 0),
        ("circuit_breaker_reset_timeout_seconds", 0),
        ("max_retries", -1),
        ("max_retries", 1000),
        ("circuit_breaker_failure_threshold", 0),
        ("circuit_breaker_half_open_max_calls", 0),
        ("bulkhead_max_concurrent", 0),
        ("bulkhead_max_waiting", -1),
        ("max_response_bytes", 0),
        ("retry_on_status", {200}),
        ("retry_backoff_factor", 0.5),
        ("service_name", "has spaces"),
        ("unknown_option", 1),
    ],
)
def test_invalid_values_name_the_field(field, value) -> None:
    """Each invalid value raises a ValidationError whose location is the field."""
    fields = {"base_url": "http://127.0.0.1/api", field: value}
    with pytest.raises(ValidationError) as info:
        ClientConfig(**fields)
    assert field in {str(loc) for err in info.value.errors() for loc in err["loc"]}


def test_base_delay_over_max_delay_is_refused() -> None:
    """The base wait cannot exceed the cap."""
    with pytest.raises(ValidationError, match="retry_base_delay must not exceed retry_max_delay"):
        ClientConfig(base_url="http://h/", retry_base_delay=5, retry_max_delay=1)


def test_secret_is_hidden_and_config_is_frozen() -> None:
    """The key is a SecretStr that no repr shows; the config cannot be mutated."""
    cfg = ClientConfig(base_url="http://h/", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(cfg)
    assert "sk-very-secret" not in str(cfg)
    with pytest.raises(ValidationError):
        cfg.max_retries = 9  # type: ignore[misc]


def test_secret_not_echoed_in_validation_errors() -> None:
    """A bad value is not repeated in the error (it might be a misplaced secret)."""
    with pytest.raises(ValidationError) as info:
        ClientConfig(base_url="sk-live-should-not-echo")
    assert "sk-live-should-not-echo" not in str(info.value)


async def test_client_accepts_a_dict() -> None:
    """BaseServiceClient takes a ClientConfig or a mapping."""
    async with BaseServiceClient({"base_url": "http://127.0.0.1:1/x", "service_name": "s"}) as c:
        assert c.config.service_name == "s"
        assert c.service_name == "s"
