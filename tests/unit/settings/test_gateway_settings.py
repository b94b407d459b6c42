"""The gateway's own settings: upstream defaults, essential dependencies, shutdown grace, admin."""

from __future__ import annotations

import pytest

from app.clients import ClientConfig
from app.redaction import scrub
from settings import Settings, SettingsError, load_settings
from settings.config import longest_call_seconds

PROD_KEYS = {
    "APP_ANALYSIS_ENGINE__API_KEY": "k8s-secret-ae-1f2e3d",
    "APP_ML_WORKBENCH__API_KEY": "k8s-secret-ml-4c5b6a",
}
TOKEN = "adm-7Hq2vR9sLx4mW8pZ"


def production(monkeypatch, **env: str) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in {**PROD_KEYS, **env}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("section", ["analysis_engine", "ml_workbench"])
def test_default_sections_carry_the_seeds_central_configuration(section) -> None:
    """Without a profile: 30 s per attempt (the seed's *_TIMEOUT default) and the gateway's bulkhead."""
    cfg: ClientConfig = getattr(Settings(env="local"), section)
    assert cfg.timeout_seconds == 30.0
    assert cfg.total_timeout_seconds is None
    assert (cfg.bulkhead_max_concurrent, cfg.bulkhead_max_waiting) == (100, 100)
    assert cfg.max_retries == ClientConfig.model_fields["max_retries"].default  # the rest: the seed's


@pytest.mark.parametrize("prefix", ["ANALYSIS_ENGINE", "ML_WORKBENCH"])
def test_the_seeds_timeout_variable_still_sets_the_attempt_timeout(monkeypatch, prefix) -> None:
    """ANALYSIS_ENGINE_TIMEOUT / ML_WORKBENCH_TIMEOUT set what their 30.0 default stood for."""
    monkeypatch.setenv(f"{prefix}_TIMEOUT", "12.5")
    assert getattr(load_settings("local"), prefix.lower()).timeout_seconds == 12.5


@pytest.mark.parametrize(
    ("profile", "ae", "mlw"),
    [
        ("test", (1.0, 3.0), (1.0, 2.0)),
        ("local", (5.0, 10.0), (3.0, 5.0)),
        ("production", (30.0, 30.0), (30.0, 10.0)),
    ],
)
def test_profiles_set_what_the_platform_wants(monkeypatch, profile, ae, mlw) -> None:
    """Attempt timeout and call deadline per profile: fast tests, a patient production."""
    if profile == "production":
        production(monkeypatch)
    s = load_settings(profile)
    assert (s.analysis_engine.timeout_seconds, s.analysis_engine.total_timeout_seconds) == ae
    assert (s.ml_workbench.timeout_seconds, s.ml_workbench.total_timeout_seconds) == mlw
    assert s.analysis_engine.bulkhead_max_concurrent == 100


def test_the_readme_walkthrough_degrades_within_its_latency() -> None:
    """Local: the ML Workbench's deadline is under the walkthrough's 5 s latency, so signals degrade."""
    assert longest_call_seconds(load_settings("local").ml_workbench) <= 5.0


# -- essential dependencies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {"analysis_engine"}),
        ("ml_workbench", {"ml_workbench"}),
        (" analysis_engine , ml_workbench ", {"analysis_engine", "ml_workbench"}),
        ('["analysis_engine", "ml_workbench"]', {"analysis_engine", "ml_workbench"}),
        ("", set()),
    ],
)
def test_essential_dependencies_from_the_environment(monkeypatch, value, expected) -> None:
    """APP_ESSENTIAL_DEPENDENCIES: comma-separated or a JSON list; default: the Analysis Engine only."""
    if value is not None:
        monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", value)
    s = load_settings("test")
    assert s.essential_dependencies == expected
    assert [s.is_essential(u) for u in ("analysis_engine", "ml_workbench")] == [
        "analysis_engine" in expected,
        "ml_workbench" in expected,
    ]


@pytest.mark.parametrize("value", ["analysis-engine-service", "analysis_engine,redis", '{"a": 1}'])
def test_unknown_essential_dependency_is_refused(monkeypatch, value) -> None:
    """A name that is not an upstream section stops start-up, naming the variable."""
    monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", value)
    with pytest.raises(SettingsError, match=r"essential_dependencies.* \(APP_ESSENTIAL_DEPENDENCIES"):
        load_settings("test")


# -- shutdown grace ----------------------------------------------------------------------


def test_longest_call_is_the_deadline_or_every_attempt_and_wait() -> None:
    """With a total deadline, that; without, each attempt's timeout plus the longest wait per retry."""
    assert longest_call_seconds(ClientConfig(base_url="http://h/", total_timeout_seconds=7)) == 7
    seed = ClientConfig(base_url="http://h/")
    assert longest_call_seconds(seed) == 4 * 10.0 + 3 * 30.0
    assert longest_call_seconds(ClientConfig(base_url="http://h/", max_retries=0, timeout_seconds=2)) == 2


@pytest.mark.parametrize(("profile", "grace"), [("test", 3.0 + 2.0 + 1), ("local", 10.0 + 5.0 + 1)])
def test_default_grace_is_the_longest_request_plus_a_second(profile, grace) -> None:
    """A signal calls both upstreams one after the other: the grace covers both deadlines."""
    s = load_settings(profile)
    assert s.shutdown_grace_seconds is None
    assert s.grace_seconds == grace


def test_configured_grace_is_kept(monkeypatch) -> None:
    """APP_SHUTDOWN_GRACE_SECONDS at or above the longest request is used as given."""
    monkeypatch.setenv("APP_SHUTDOWN_GRACE_SECONDS", "25")
    assert load_settings("test").grace_seconds == 25.0


@pytest.mark.parametrize("value", ["4.9", "0", "-1", "soon"])
def test_grace_shorter_than_a_request_is_refused(monkeypatch, value) -> None:
    """A grace that could cut requests short (or is no duration) stops start-up, naming the variable."""
    monkeypatch.setenv("APP_SHUTDOWN_GRACE_SECONDS", value)
    with pytest.raises(SettingsError, match=r"shutdown_grace_seconds.*APP_SHUTDOWN_GRACE_SECONDS"):
        load_settings("test")


# -- admin endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "env", "active"),
    [
        ("local", {}, True),
        ("test", {}, True),
        ("test", {"APP_ADMIN_ENABLED": "false"}, False),
        ("production", {}, False),
        ("production", {"APP_ADMIN_TOKEN": TOKEN}, True),
        ("local", {"APP_ADMIN_ENABLED": "false", "APP_ADMIN_TOKEN": TOKEN}, True),
    ],
)
def test_admin_is_on_in_local_and_test_and_needs_a_token_in_production(
    monkeypatch, profile, env, active
) -> None:
    """The profiles switch the admin endpoints on; in production only a token does."""
    if profile == "production":
        production(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings(profile).admin_active is active


def test_production_refuses_admin_enabled_without_a_token(monkeypatch) -> None:
    """APP_ADMIN_ENABLED=true in production without a token is a mistake, not a silent 404."""
    production(monkeypatch, APP_ADMIN_ENABLED="true")
    with pytest.raises(SettingsError, match=r"admin_enabled \(APP_ADMIN_ENABLED\).*APP_ADMIN_TOKEN"):
        load_settings()


@pytest.mark.parametrize(
    "token", ["short", "REPLACE_ME_REPLACE_ME", "has a space in the token", "tok\r\nen-0123456789abc"]
)
def test_weak_or_unusable_admin_tokens_are_refused(monkeypatch, token) -> None:
    """Too short, a placeholder, or not sendable as a bearer token: refused, the token never echoed."""
    production(monkeypatch, APP_ADMIN_TOKEN=token)
    with pytest.raises(SettingsError, match=r"admin_token \(APP_ADMIN_TOKEN\)") as info:
        load_settings()
    assert token not in str(info.value)


def test_admin_token_is_a_secret(monkeypatch) -> None:
    """The token never shows in the settings' repr, and is scrubbed once the app registered it."""
    from app.containers import Container  # noqa: PLC0415 - only this test builds an app
    from app.main import create_app  # noqa: PLC0415

    production(monkeypatch, APP_ADMIN_TOKEN=TOKEN)
    s = load_settings()
    assert TOKEN not in repr(s)
    container = Container()
    container.settings.override(s)
    create_app(container)
    assert scrub(f"token={TOKEN}") == "token=***"


# -- configured headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("APP_ANALYSIS_ENGINE__API_KEY", "ae-key-123\r\nX-Evil: 1", "analysis_engine.api_key"),
        ("ML_WORKBENCH_API_KEY", "ml-key-456\n", "ml_workbench.api_key"),
        ("APP_ML_WORKBENCH__API_KEY_HEADER", "X-Key\r\nX-Evil", "ml_workbench.api_key_header"),
        ("APP_ANALYSIS_ENGINE__API_KEY_HEADER", "X API Key", "analysis_engine.api_key_header"),
    ],
)
def test_header_injection_in_configuration_stops_start_up(monkeypatch, var, value, field) -> None:
    """CR/LF in a key, or a header name that is no token: one line naming the field; no value shown."""
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings("test")
    message = str(info.value)
    assert "\n" not in message
    assert f"{field} (" in message
    assert "key-" not in message


def test_null_unsets_an_optional_value_from_the_profile(monkeypatch) -> None:
    """APP_..._TOTAL_TIMEOUT_SECONDS=null removes the profile's deadline (None: no deadline)."""
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS", "null")
    assert load_settings("test").analysis_engine.total_timeout_seconds is None
    assert load_settings("test").ml_workbench.total_timeout_seconds == 2.0
