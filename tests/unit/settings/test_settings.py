"""Settings: profiles, env precedence, the seed's aliases, and one clear line on bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_test_profile_is_selected_by_app_env(monkeypatch) -> None:
    """APP_ENV=test loads settings/profiles/test.env."""
    monkeypatch.setenv("APP_ENV", "test")
    settings = load_settings()
    assert settings.env == "test"
    assert settings.analysis_engine.timeout_seconds == 1.0
    assert settings.ml_workbench.circuit_breaker_reset_timeout_seconds == 1.0
    assert settings.analysis_engine.service_name == "analysis-engine-service"  # default kept


def test_local_is_the_default_profile() -> None:
    """Without APP_ENV the local profile applies."""
    settings = load_settings()
    assert settings.env == "local"
    auth = settings.analysis_engine.auth
    assert auth is not None
    assert auth.type == "oauth2_client_credentials"
    assert auth.client_secret.get_secret_value() == "local-gateway-secret"


def test_real_env_beats_the_profile_file(monkeypatch) -> None:
    """A real variable overrides the same setting in the profile file."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS", "2.5")
    assert load_settings().analysis_engine.timeout_seconds == 2.5


def test_seed_aliases_are_honoured(monkeypatch) -> None:
    """ANALYSIS_ENGINE_API_URL, _TIMEOUT, _MAX_RETRIES, _API_KEY and the ML_WORKBENCH_ ones."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("ANALYSIS_ENGINE_API_URL", "http://10.1.2.3:9001/v2")
    monkeypatch.setenv("ANALYSIS_ENGINE_TIMEOUT", "4")
    monkeypatch.setenv("ANALYSIS_ENGINE_MAX_RETRIES", "7")
    monkeypatch.setenv("ANALYSIS_ENGINE_API_KEY", "ae-real-key-123")
    monkeypatch.setenv("ML_WORKBENCH_API_URL", "http://10.1.2.3:9002/v1")
    monkeypatch.setenv("ML_WORKBENCH_TIMEOUT", "6")
    monkeypatch.setenv("ML_WORKBENCH_MAX_RETRIES", "1")
    monkeypatch.setenv("ML_WORKBENCH_API_KEY", "ml-real-key-456")
    s = load_settings()
    ae, ml = s.analysis_engine, s.ml_workbench
    assert (ae.base_url, ae.timeout_seconds, ae.max_retries) == ("http://10.1.2.3:9001/v2/", 4.0, 7)
    assert ae.api_key is not None
    assert ae.api_key.get_secret_value() == "ae-real-key-123"
    assert (ml.base_url, ml.timeout_seconds, ml.max_retries) == ("http://10.1.2.3:9002/v1/", 6.0, 1)
    assert ae.retry_base_delay == 0.01  # the rest of the section still comes from the profile


def test_canonical_name_beats_alias(monkeypatch) -> None:
    """When both are set, APP_ANALYSIS_ENGINE__BASE_URL wins over ANALYSIS_ENGINE_API_URL."""
    monkeypatch.setenv("ANALYSIS_ENGINE_API_URL", "http://127.0.0.1:1/alias")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", "http://127.0.0.1:2/canonical")
    assert load_settings().analysis_engine.base_url == "http://127.0.0.1:2/canonical/"


@pytest.mark.parametrize(
    ("var", "value", "names"),
    [
        (
            "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS",
            "-1",
            "analysis_engine.timeout_seconds (APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS or ANALYSIS_ENGINE_TIMEOUT)",
        ),
        (
            "ML_WORKBENCH_MAX_RETRIES",
            "lots",
            "ml_workbench.max_retries (APP_ML_WORKBENCH__MAX_RETRIES or ML_WORKBENCH_MAX_RETRIES)",
        ),
        (
            "ANALYSIS_ENGINE_API_URL",
            "not-a-url",
            "analysis_engine.base_url (APP_ANALYSIS_ENGINE__BASE_URL or ANALYSIS_ENGINE_API_URL)",
        ),
        ("APP_PORT", "99999", "port (APP_PORT)"),
    ],
)
def test_bad_value_gives_one_line_naming_field_and_env(monkeypatch, var, value, names) -> None:
    """A bad value raises SettingsError: one line, the field, the env variable(s), no value echoed."""
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert names in message
    assert value not in message.replace(names, "")


def test_unknown_profile_is_refused(monkeypatch) -> None:
    """APP_ENV must name a profile."""
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(SettingsError, match="env \\(APP_ENV\\)"):
        load_settings()


def test_production_refuses_placeholder_secrets(monkeypatch) -> None:
    """The production profile ships placeholders, so a deploy without real keys does not start."""
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(
        SettingsError,
        match=r"analysis_engine.api_key \(APP_ANALYSIS_ENGINE__API_KEY\) is a placeholder",
    ):
        load_settings()


def test_production_refuses_plain_http_off_loopback(monkeypatch) -> None:
    """Plain http to a remote host is refused in production unless explicitly allowed."""
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__API_KEY", "k8s-secret-ae-1f2e3d")
    monkeypatch.setenv("APP_ML_WORKBENCH__API_KEY", "k8s-secret-ml-4c5b6a")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", "http://analysis.internal/api/v1")
    with pytest.raises(SettingsError, match=r"plain http to analysis\.internal"):
        load_settings()
    monkeypatch.setenv("APP_ALLOW_INSECURE_HTTP", "true")
    assert load_settings().env == "production"
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", "https://analysis.internal/api/v1")
    monkeypatch.delenv("APP_ALLOW_INSECURE_HTTP")
    assert load_settings().analysis_engine.base_url.startswith("https://")


def test_keys_are_secret_strings() -> None:
    """API keys and client secrets never show in the settings' repr."""
    settings = Settings(env="local")
    assert "local-gateway-secret" not in repr(load_settings())
    assert settings.analysis_engine.api_key is None or "**" in repr(settings.analysis_engine.api_key)


def test_python_m_app_exits_with_one_clear_line_on_bad_settings() -> None:
    """The service refuses to start: exit 2, one line on stderr naming field and variable."""
    env = {"PATH": "/usr/bin:/bin", "APP_ENV": "test", "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "analysis_engine.timeout_seconds (APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS" in lines[0]


@pytest.mark.parametrize(
    ("var", "value", "names", "reason"),
    [
        (
            "APP_ANALYSIS_ENGINE__DISCOVERY",
            "consul://x/y",
            "analysis_engine.discovery (APP_ANALYSIS_ENGINE__DISCOVERY)",
            "scheme",
        ),
        (
            "APP_ANALYSIS_ENGINE__INSTANCES",
            '["http://127.0.0.1:9001/api/v1", "ftp://nope/"]',
            "analysis_engine.instances (APP_ANALYSIS_ENGINE__INSTANCES)",
            "instance 1",
        ),
        (
            "APP_ML_WORKBENCH__LOAD_BALANCER",
            "random",
            "ml_workbench.load_balancer (APP_ML_WORKBENCH__LOAD_BALANCER)",
            "",
        ),
    ],
)
def test_bad_fleet_settings_name_the_field_and_the_variable(monkeypatch, var, value, names, reason) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert names in message
    assert reason in message


def test_instances_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(
        "APP_ANALYSIS_ENGINE__INSTANCES", '["http://127.0.0.1:9001/api/v1", "http://127.0.0.1:9002/api/v1"]'
    )
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__OUTLIER_MAX_EJECTION_PERCENT", "100")
    config = load_settings().analysis_engine
    assert config.instances == ("http://127.0.0.1:9001/api/v1/", "http://127.0.0.1:9002/api/v1/")
    assert config.fleet
    assert config.outlier_max_ejection_percent == 100


@pytest.mark.parametrize(
    "env",
    [
        {"APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED": "true"},
        {
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_PER_SECOND": "5",
            "APP_ANALYSIS_ENGINE__RATE_LIMIT_SCOPE": "global",
        },
        {
            "APP_ANALYSIS_ENGINE__RETRY_BUDGET_ENABLED": "true",
            "APP_ANALYSIS_ENGINE__RETRY_BUDGET_SCOPE": "global",
        },
    ],
)
def test_shared_state_without_redis_is_refused_at_start(monkeypatch, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="analysis_engine needs APP_REDIS_URL"):
        load_settings()


def test_the_redis_url_is_a_secret(monkeypatch) -> None:
    monkeypatch.setenv("APP_REDIS_URL", "redis://:pw-in-url@127.0.0.1:6379/0")
    monkeypatch.setenv("APP_SHARED_STATE__DEADLINE_SECONDS", "0.05")
    settings = load_settings()
    assert "pw-in-url" not in repr(settings)
    shared = settings.shared_state_settings()
    assert shared is not None
    assert shared.deadline_seconds == 0.05
    assert "pw-in-url" not in repr(shared)
