"""ClientConfig: the documented defaults, and invalid values refused with the field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.clients import BaseServiceClient, ClientConfig

#: DESIGN §5: the seed's fields and defaults. A contract: a profile may set other values,
#: the class may not.
SEED_DEFAULTS = [
    ("timeout_seconds", 10.0),
    ("api_key", None),
    ("api_key_header", "X-API-Key"),
    ("max_retries", 3),
    ("retry_base_delay", 0.5),
    ("retry_max_delay", 30.0),
    ("retry_backoff_factor", 2.0),
    ("retry_jitter", True),
    ("circuit_breaker_failure_threshold", 5),
    ("circuit_breaker_reset_timeout_seconds", 60),
    ("bulkhead_max_concurrent", 10),
    ("bulkhead_max_waiting", 20),
    ("enable_metrics", True),
    ("enable_request_logging", True),
    ("log_request_body", False),
    ("log_response_body", False),
    ("service_name", "unknown-service"),
]


@pytest.mark.parametrize(("field", "default"), SEED_DEFAULTS, ids=[f for f, _ in SEED_DEFAULTS])
def test_seed_defaults(field, default) -> None:
    """Each of the seed's fields keeps the seed's default."""
    cfg = ClientConfig(base_url="http://127.0.0.1:8001/api/v1")
    value = getattr(cfg, field)
    assert value == default
    # True == 1: equality alone would not tell a flag from a count.
    assert isinstance(value, bool) is isinstance(default, bool)


def test_base_url_is_required() -> None:
    """The seed's one required field: no default URL to call by accident."""
    with pytest.raises(ValidationError) as info:
        ClientConfig()  # type: ignore[call-arg]
    assert [err["loc"] for err in info.value.errors()] == [("base_url",)]


def test_defaults_of_the_added_fields() -> None:
    """What the issues added is off or conservative by default; the URL gets one trailing slash."""
    cfg = ClientConfig(base_url="http://127.0.0.1:8001/api/v1")
    assert cfg.base_url == "http://127.0.0.1:8001/api/v1/"
    assert cfg.total_timeout_seconds is None
    assert cfg.retry_on_status == frozenset({429, 502, 503, 504})
    assert cfg.circuit_breaker_half_open_max_calls == 1
    assert cfg.max_response_bytes == 10 * 1024 * 1024
    assert cfg.follow_redirects is False
    assert (cfg.retry_budget_enabled, cfg.hedging_enabled, cfg.rate_limit_per_second) == (False, False, None)
    assert (cfg.bulkhead_mode, cfg.circuit_breaker_mode) == ("fixed", "consecutive")


@pytest.mark.parametrize(
    ("fields", "initial"),
    [({}, 10), ({"bulkhead_max_concurrent": 100}, 20), ({"bulkhead_max_concurrent": 5}, 5),
     ({"bulkhead_max_concurrent": 50, "adaptive_initial_limit": 30}, 30)],
)  # fmt: skip
def test_adaptive_mode_starts_within_the_seed_bulkhead(fields, initial) -> None:
    """Switching the adaptive limit on needs no other field: it starts at min(20, the maximum)."""
    cfg = ClientConfig(base_url="http://h/", bulkhead_mode="adaptive", **fields)
    assert cfg.adaptive_initial_limit == initial


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
        ("api_key_header", "X API Key"),
        ("api_key_header", "X-Key:"),
        ("api_key_header", "X-Key\r\nInjected: 1"),
        ("api_key_header", "Ключ"),
        ("api_key_header", ""),
        ("api_key", "sk-abc\r\nX-Injected: 1"),
        ("api_key", "sk-abc\n"),
        ("api_key", "sk-\x00abc"),
        ("api_key", "sk-\x7fabc"),
        ("api_key", " sk-abc"),
        ("api_key", "sk-abc\t"),
        ("api_key", "sk-ключ"),
        ("api_key", ""),
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


@pytest.mark.parametrize("key", ["sk-abc\r\nX-Injected: 1", "sk-\x00abc", " sk-abc"])
def test_bad_header_value_is_refused_without_echoing_it(key) -> None:
    """The refusal names api_key and says why, but never shows the key itself."""
    with pytest.raises(ValidationError) as info:
        ClientConfig(base_url="http://h/", api_key=key)
    message = str(info.value)
    assert "api_key" in message
    assert "control characters" in message
    assert "sk-" not in message


@pytest.mark.parametrize("header", ["X-API-Key", "x_api_key", "Api-Key~1", "!#$%&'*+-.^_`|~"])
@pytest.mark.parametrize("key", ["sk-abc123", "Bearer abc.def", "a b  c"])
def test_good_header_parts_are_kept(header, key) -> None:
    """Any RFC 9110 token names the header; visible ASCII with inner spaces is a valid key."""
    cfg = ClientConfig(base_url="http://h/", api_key_header=header, api_key=key)
    assert cfg.api_key_header == header
    assert cfg.api_key is not None
    assert cfg.api_key.get_secret_value() == key


def test_fleet_options_are_off_and_checked() -> None:
    plain = ClientConfig(base_url="http://127.0.0.1:1/api")
    assert not plain.fleet
    assert plain.instances is None
    assert plain.discovery is None
    listed = ClientConfig(
        instances=["http://127.0.0.1:1/api", "http://127.0.0.1:2/api/", "http://127.0.0.1:1/api"]
    )
    assert listed.base_url == "http://127.0.0.1:1/api/"  # the first stands for the upstream
    assert listed.instances == (
        "http://127.0.0.1:1/api/",
        "http://127.0.0.1:2/api/",
    )  # normalised, deduplicated
    with pytest.raises(ValidationError, match="either instances or discovery"):
        ClientConfig(instances=["http://127.0.0.1:1/"], discovery="file:///tmp/x.json")
    with pytest.raises(ValidationError, match="instance 0: must not carry credentials"):
        ClientConfig(instances=["http://u:p@127.0.0.1:1/"])
    with pytest.raises(ValidationError, match="absolute"):
        ClientConfig(base_url="http://127.0.0.1:1/", discovery="file://relative/instances.json")
    with pytest.raises(ValidationError, match="outlier_base_ejection_seconds must not exceed"):
        ClientConfig(base_url="http://127.0.0.1:1/", outlier_base_ejection_seconds=600)
