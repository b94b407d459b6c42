"""Upstreams by configuration: APP_UPSTREAMS__<NAME>__<FIELD> and profile lines register an upstream."""

from __future__ import annotations

import pytest

from app.clients import ClientConfig
from settings import Settings, SettingsError, load_settings
from settings.config import longest_call_seconds

URL = "http://127.0.0.1:9100/pricing"


def test_one_variable_registers_an_upstream(monkeypatch) -> None:
    """APP_UPSTREAMS__PRICING__BASE_URL alone: an upstream "pricing", ClientConfig defaults, "pricing-service"."""
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__BASE_URL", URL)
    s = load_settings("test")
    assert list(s.upstreams) == ["analysis_engine", "ml_workbench", "pricing"]
    pricing = s.upstreams["pricing"]
    assert pricing.base_url == URL + "/"
    assert pricing.service_name == "pricing-service"
    # None of the gateway's own defaults (30 s, bulkhead 100 + 100): the seed's, as ClientConfig has them.
    seed = ClientConfig(base_url=URL, service_name="pricing-service")
    assert pricing == seed
    assert s.upstream("pricing") is pricing


def test_every_client_config_field_is_a_variable(monkeypatch) -> None:
    """Each ClientConfig field, parsed as for the gateway's own upstreams: lists as JSON, "null" for None."""
    env = {
        "BASE_URL": URL,
        "TIMEOUT_SECONDS": "2.5",
        "TOTAL_TIMEOUT_SECONDS": "null",
        "MAX_RETRIES": "1",
        "RETRY_ON_STATUS": "[503, 504]",
        "CIRCUIT_BREAKER_MODE": "failure_rate",
        "API_KEY": "pricing-key-123",
        "SERVICE_NAME": "prices",
        "RETRY_JITTER": "false",
    }
    for field, value in env.items():
        monkeypatch.setenv(f"APP_UPSTREAMS__PRICING__{field}", value)
    p = load_settings("test").upstreams["pricing"]
    assert (p.timeout_seconds, p.total_timeout_seconds, p.max_retries) == (2.5, None, 1)
    assert p.retry_on_status == frozenset({503, 504})
    assert p.circuit_breaker_mode == "failure_rate"
    assert p.api_key is not None
    assert p.api_key.get_secret_value() == "pricing-key-123"
    assert (p.service_name, p.retry_jitter) == ("prices", False)


def test_names_are_lower_cased_and_ordered(monkeypatch) -> None:
    """Environment names are case-insensitive: the gateway's own come first, then the others by name."""
    monkeypatch.setenv("APP_UPSTREAMS__ZETA__BASE_URL", URL)
    monkeypatch.setenv("app_upstreams__Alpha__base_url", URL)
    s = load_settings("test")
    assert list(s.upstreams) == ["analysis_engine", "ml_workbench", "alpha", "zeta"]
    assert s.upstreams["zeta"].service_name == "zeta-service"


def test_a_profile_file_registers_one_too(tmp_path, monkeypatch) -> None:
    """The same keys in a profile file; a real variable beats the file's line."""
    profile = tmp_path / "custom.env"
    profile.write_text(
        "APP_UPSTREAMS__PRICING__BASE_URL=http://127.0.0.1:9100/pricing\n"
        "APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS=4\n"
        "APP_UPSTREAMS__PRICING__MAX_RETRIES=2\n"
    )
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__MAX_RETRIES", "0")
    s = Settings(_env_file=profile, env="test")
    assert (s.upstreams["pricing"].timeout_seconds, s.upstreams["pricing"].max_retries) == (4.0, 0)


def test_the_gateway_upstreams_are_entries_too(monkeypatch) -> None:
    """settings.analysis_engine is upstreams["analysis_engine"]; APP_UPSTREAMS__ANALYSIS_ENGINE__* beats APP_ANALYSIS_ENGINE__*."""
    s = load_settings("test")
    assert s.analysis_engine is s.upstreams["analysis_engine"]
    assert s.ml_workbench is s.upstreams["ml_workbench"]
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS", "8")
    assert load_settings("test").analysis_engine.timeout_seconds == 8.0
    monkeypatch.setenv("APP_UPSTREAMS__ANALYSIS_ENGINE__TIMEOUT_SECONDS", "7")
    assert load_settings("test").analysis_engine.timeout_seconds == 7.0
    assert load_settings("test").analysis_engine.total_timeout_seconds == 3.0  # the profile's, kept


def test_a_section_given_to_the_constructor_is_that_upstream() -> None:
    """Settings(analysis_engine=config), as before the registry, sets that entry."""
    config = ClientConfig(base_url="http://127.0.0.1:9/", service_name="analysis-engine-service")
    assert Settings(env="test", analysis_engine=config).analysis_engine == config
    given = Settings(env="test", upstreams={"Quotes": {"base_url": URL}})
    assert given.upstreams["quotes"].service_name == "quotes-service"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (
            {"APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS": "-1", "APP_UPSTREAMS__PRICING__BASE_URL": URL},
            "upstreams.pricing.timeout_seconds (APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS)",
        ),
        (
            {"APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS": "2"},
            "upstreams.pricing.base_url (APP_UPSTREAMS__PRICING__BASE_URL)",
        ),
        (
            {"APP_UPSTREAMS__PRICING__BASE_URL": URL, "APP_UPSTREAMS__PRICING__TIMEOUTT": "2"},
            "upstreams.pricing.timeoutt (APP_UPSTREAMS__PRICING__TIMEOUTT)",
        ),
        (
            {"APP_ANALYSIS_ENGINE__MAX_RETRIES": "lots"},
            "upstreams.analysis_engine.max_retries (APP_ANALYSIS_ENGINE__MAX_RETRIES or ANALYSIS_ENGINE_MAX_RETRIES)",
        ),
    ],
    ids=["bad-value", "no-base-url", "unknown-field", "gateway-upstream"],
)
def test_a_bad_upstream_value_names_its_field_and_variable(monkeypatch, env, names) -> None:
    """One line: the field under upstreams, and the variable(s) that set it; never the value."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings("test")
    message = str(info.value)
    assert "\n" not in message
    assert names in message
    assert "lots" not in message


def test_a_name_that_is_not_one_is_refused() -> None:
    """Upstream names are lower-case identifiers: they are env variable parts and keys in code."""
    with pytest.raises(ValueError, match="'pri-cing' is not an upstream name"):
        Settings(env="test", upstreams={"pri-cing": {"base_url": URL}})


def test_essential_dependencies_may_name_a_configured_upstream(monkeypatch) -> None:
    """APP_ESSENTIAL_DEPENDENCIES accepts any configured name, and refuses one that is not configured."""
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__BASE_URL", URL)
    monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", "analysis_engine,pricing")
    s = load_settings("test")
    assert s.is_essential("pricing")
    assert not s.is_essential("ml_workbench")
    monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", "pricing,inventory")
    with pytest.raises(
        SettingsError, match=r"essential_dependencies \(APP_ESSENTIAL_DEPENDENCIES\).*'inventory'"
    ):
        load_settings("test")


def test_the_shutdown_grace_covers_every_upstream(monkeypatch) -> None:
    """A route of one's own may call a configured upstream too: its longest call adds to the grace."""
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__BASE_URL", URL)
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__TOTAL_TIMEOUT_SECONDS", "4")
    s = load_settings("test")
    assert s.longest_request_seconds == 3.0 + 2.0 + 4.0
    assert s.grace_seconds == longest_call_seconds(s.upstreams["pricing"]) + 3.0 + 2.0 + 1


PROD = {
    "APP_ANALYSIS_ENGINE__API_KEY": "k8s-secret-ae-1f2e3d",
    "APP_ML_WORKBENCH__API_KEY": "k8s-secret-ml-4c5b6a",
}


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {
                "APP_UPSTREAMS__PRICING__BASE_URL": "https://pricing.internal/",
                "APP_UPSTREAMS__PRICING__API_KEY": "changeme",
            },
            r"upstreams\.pricing\.api_key \(APP_UPSTREAMS__PRICING__API_KEY\) is a placeholder",
        ),
        (
            {"APP_UPSTREAMS__PRICING__BASE_URL": "http://pricing.internal/"},
            r"upstreams\.pricing\.base_url \(APP_UPSTREAMS__PRICING__BASE_URL\) is plain http to pricing\.internal",
        ),
    ],
    ids=["placeholder-key", "plain-http"],
)
def test_production_guards_cover_every_upstream(monkeypatch, env, match) -> None:
    """A configured upstream gets the production checks of the gateway's own."""
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in {**PROD, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=match):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ()), ("svc.routes:router", ("svc.routes:router",)), ('["a:r", "b.c:r"]', ("a:r", "b.c:r"))],
)
def test_routers_of_ones_own_are_import_strings(monkeypatch, value, expected) -> None:
    """APP_ROUTERS: package.module:router entries, comma-separated or a JSON list."""
    monkeypatch.setenv("APP_ROUTERS", value)
    assert load_settings("test").routers == expected


def test_a_router_that_is_no_import_string_is_refused(monkeypatch) -> None:
    """An entry without module:attribute stops start-up, naming the variable."""
    monkeypatch.setenv("APP_ROUTERS", "svc/routes.py")
    with pytest.raises(SettingsError, match=r"routers \(APP_ROUTERS\): write each as package\.module:router"):
        load_settings("test")
