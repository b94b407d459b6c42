"""The live config store: APP_CONFIG_FILE, validation whole, refusals by name, subscribers, metrics, redaction."""

from __future__ import annotations

import hashlib
import logging
import os

import orjson
import pytest
from prometheus_client import CollectorRegistry

from settings import (
    LIVE_FIELDS,
    RESTART_FIELDS,
    ConfigStore,
    Settings,
    SettingsError,
    load_settings,
)
from settings.redacted import redacted_settings

AE_KEY = "ae-live-secret-0123456789"
MLW_KEY = "mlw-live-secret-9876543210"
BASE = f"""\
# a config file as an operator keeps it
APP_LOG_JSON=true
APP_ANALYSIS_ENGINE__BASE_URL=http://127.0.0.1:8001/api/v1
APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS=1.0
APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD=10
APP_ANALYSIS_ENGINE__API_KEY={AE_KEY}
APP_ML_WORKBENCH__BASE_URL=http://127.0.0.1:8002/api/v1
APP_ML_WORKBENCH__API_KEY={MLW_KEY}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No APP_ or alias variables leak in from the machine running the tests; the root level is restored."""
    for name in list(os.environ):
        if name.upper().startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "app.env"
    path.write_text(BASE)
    return path


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def store(config, registry):
    return ConfigStore("test", path=config, registry=registry, clock=lambda: 1_800_000_000.0)


def reloads(registry, result: str) -> float:
    return registry.get_sample_value("config_reloads_total", {"result": result}) or 0.0


def rewrite(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# APP_CONFIG_FILE and the file's keys


def test_app_config_file_replaces_the_profile_file(config, monkeypatch) -> None:
    """APP_CONFIG_FILE names the dotenv file read instead of settings/profiles/<profile>.env."""
    monkeypatch.setenv("APP_CONFIG_FILE", str(config))
    settings = load_settings("test")
    assert settings.analysis_engine.circuit_breaker_failure_threshold == 10
    assert settings.analysis_engine.retry_base_delay == 0.5  # the test profile's 0.01 is not read
    assert ConfigStore("test").path == config


def test_a_relative_app_config_file_is_taken_from_the_working_directory(config, monkeypatch) -> None:
    """A relative APP_CONFIG_FILE is anchored at start-up, and its symlinks are kept (not resolved)."""
    monkeypatch.chdir(config.parent)
    monkeypatch.setenv("APP_CONFIG_FILE", "app.env")
    assert ConfigStore("test").path == config


def test_the_environment_beats_the_file(config, monkeypatch) -> None:
    """A variable in the environment wins over the file's line, so changing that line live changes nothing."""
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS", "7")
    store = ConfigStore("test", path=config, registry=CollectorRegistry())
    assert store.settings.analysis_engine.timeout_seconds == 7.0
    rewrite(config, "TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=2.0")
    assert store.reload("test").result == "unchanged"
    assert store.settings.analysis_engine.timeout_seconds == 7.0


def test_a_missing_config_file_fails_naming_it(tmp_path, monkeypatch) -> None:
    """APP_CONFIG_FILE naming no file is a SettingsError that names the file and the variable."""
    monkeypatch.setenv("APP_CONFIG_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(SettingsError, match=r"nope\.env \(named by APP_CONFIG_FILE\): does not exist"):
        load_settings("test")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("APP_LOG_LEVLE=DEBUG", "APP_LOG_LEVLE: not a setting; did you mean APP_LOG_LEVEL?"),
        ("APP_PORT__X=1", "APP_PORT__X: not a setting"),
        ("ANALYSIS_ENGINE_TIMEOUT=3", "in a file write APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS"),
        ("APP_LOG_LEVEL", "APP_LOG_LEVEL: no '=' on its line"),
        ("APP_ANALYSIS_ENGINE__TIMOUT_SECONDS=3", "analysis_engine.timout_seconds"),
        ("APP_SHARED_STATE__BOGUS=1", "shared_state.bogus (APP_SHARED_STATE__BOGUS)"),
    ],
)
def test_a_key_that_would_be_ignored_is_refused_by_name(config, monkeypatch, line, expected) -> None:
    """A typo in an APP_ key, a seed alias (env only) or a bare name in the file fails, by name, instead of being ignored."""
    config.write_text(BASE + line + "\n")
    monkeypatch.setenv("APP_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError) as raised:
        load_settings("test")
    assert expected in str(raised.value)


def test_other_keys_of_a_shared_file_are_left_alone(config, monkeypatch) -> None:
    """Keys that are neither APP_ nor a seed alias may belong to another program: ignored, as before."""
    config.write_text(BASE + "AE_PORT=8001\nSOMETHING_ELSE=x\n")
    monkeypatch.setenv("APP_CONFIG_FILE", str(config))
    assert load_settings("test").port == 8000


def test_every_setting_is_either_live_or_needs_a_restart() -> None:
    """A new field must be put in one of the two lists: the store refuses what it cannot apply."""
    assert set(RESTART_FIELDS) | set(LIVE_FIELDS) == set(Settings.model_fields)
    assert set(RESTART_FIELDS) & set(LIVE_FIELDS) == set()


# reloads


def test_the_first_snapshot_is_version_1(store, config, registry) -> None:
    """The store starts from the file: version 1, its digest and path; the gauge says 1."""
    snapshot = store.current
    assert (snapshot.version, snapshot.source, snapshot.loaded_at) == (1, config, 1_800_000_000.0)
    assert snapshot.digest.startswith("sha256:")
    assert snapshot.settings.analysis_engine.timeout_seconds == 1.0
    assert store.last_result is None
    assert registry.get_sample_value("service_client_config_version") == 1
    assert reloads(registry, "applied") == 0


def test_an_unchanged_file_is_not_applied(store, registry) -> None:
    """Same bytes, same environment: unchanged, nothing applied, no new version."""
    applied = []
    store.subscribe(None, lambda old, new: applied.append(new))
    result = store.reload("SIGHUP")
    assert (result.result, result.version, result.reason) == ("unchanged", 1, "SIGHUP")
    assert applied == []
    assert reloads(registry, "unchanged") == 1


def test_a_valid_change_is_applied_as_the_next_version(store, config, registry) -> None:
    """A changed threshold: applied to the subscribers, version 2, the message names the field (not the value)."""
    seen = []
    store.subscribe(
        None,
        lambda old, new: seen.append(
            (old.analysis_engine.timeout_seconds, new.analysis_engine.timeout_seconds)
        ),
    )
    before = store.current
    rewrite(config, "TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=2.5")
    result = store.reload("test")
    assert result.result == "applied"
    assert result.message == "version 2 (changed: upstreams.analysis_engine.timeout_seconds)"
    assert seen == [(1.0, 2.5)]
    assert store.current.version == 2
    assert store.current.digest != before.digest
    assert before.settings.analysis_engine.timeout_seconds == 1.0  # the old snapshot is never changed
    assert registry.get_sample_value("service_client_config_version") == 2
    assert reloads(registry, "applied") == 1


def test_a_comment_changes_the_digest_not_the_version(store, config) -> None:
    """Other bytes, the same settings: unchanged; the digest follows the file, the version stays."""
    config.write_text(BASE + "# tuned during the incident\n")
    result = store.reload("test")
    assert (result.result, store.current.version) == ("unchanged", 1)
    assert store.current.digest == "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()


def test_a_changed_environment_is_reloaded(store, monkeypatch) -> None:
    """The same file under a changed environment is a new input: rebuilt and applied."""
    monkeypatch.setenv("APP_SIGNAL_MODEL_ID", "direction-gbm-v2")
    result = store.reload("test")
    assert (result.result, store.settings.signal_model_id) == ("applied", "direction-gbm-v2")


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=fast", "analysis_engine.timeout_seconds"),
        ("TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=-1", "greater than 0"),
        ("APP_LOG_JSON=true", "APP_LOG_JSN=true", "APP_LOG_JSN: not a setting; did you mean APP_LOG_JSON?"),
    ],
)
def test_an_invalid_file_is_refused_and_the_old_snapshot_stays(
    store, config, registry, caplog, old, new, names
) -> None:
    """Bad type, bad value or unknown key: invalid, logged once naming the field, counted each time; version 1 stays."""
    rewrite(config, old, new)
    applied = []
    store.subscribe(lambda o, n: applied.append("check") or [], lambda o, n: applied.append("apply"))
    with caplog.at_level(logging.DEBUG, "settings.store"):
        first = store.reload("test")
        again = store.reload("SIGHUP")
    assert first.result == again.result == "invalid"
    assert names in first.message
    assert first.message.endswith("version 1 stays")
    assert store.current.version == 1
    assert applied == []
    warnings = [r for r in caplog.records if r.name == "settings.store" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert names in warnings[0].getMessage()
    assert reloads(registry, "invalid") == 2


def test_an_empty_file_is_refused(store, config) -> None:
    """What a truncating writer leaves before writing: every setting would fall back to its default."""
    config.write_text("")
    result = store.reload("test")
    assert (result.result, store.current.version) == ("invalid", 1)
    assert "is empty" in result.message


def test_an_invalid_secret_is_never_echoed(store, config, caplog) -> None:
    """A bad API key or admin token is named, its value is in no message and no log line."""
    bad_key = "bad key\x01with-control-char"
    bad_token = "short-tok"
    config.write_text(BASE.replace(AE_KEY, f'"{bad_key}"') + f"APP_ADMIN_TOKEN={bad_token}\n")
    with caplog.at_level(logging.DEBUG):
        result = store.reload("test")
    assert result.result == "invalid"
    assert "analysis_engine.api_key (APP_ANALYSIS_ENGINE__API_KEY" in result.message
    assert "admin_token (APP_ADMIN_TOKEN)" in result.message
    for secret in (bad_key, bad_token, AE_KEY, MLW_KEY):
        assert secret not in result.message
        assert secret not in caplog.text


def test_a_field_that_needs_a_restart_is_refused_by_name(store, config, registry, caplog) -> None:
    """Port and host are read once: refused with their variables and 'restart'; nothing applied, version 1 stays."""
    applied = []
    store.subscribe(None, lambda o, n: applied.append(n))
    config.write_text(
        BASE.replace("TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=2.0") + "APP_PORT=9000\nAPP_HOST=0.0.0.0\n"
    )
    with caplog.at_level(logging.WARNING, "settings.store"):
        result = store.reload("test")
    assert result.result == "refused"
    assert (
        "host (APP_HOST), port (APP_PORT) cannot change while running; restart to apply them"
        in result.message
    )
    assert applied == []
    assert store.current.version == 1
    assert store.settings.analysis_engine.timeout_seconds == 1.0  # the live part is not applied either
    assert reloads(registry, "refused") == 1


def test_a_subscriber_check_vetoes_the_whole_reload(store, config) -> None:
    """Any problem from any check: refused with that problem, no apply called, not even the others'."""
    calls = []
    store.subscribe(None, lambda o, n: calls.append("first"), name="first")
    store.subscribe(
        lambda o, n: ["the bulkhead cannot shrink below its in-flight calls"],
        lambda o, n: calls.append("second"),
    )
    rewrite(config, "THRESHOLD=10", "THRESHOLD=3")
    result = store.reload("test")
    assert result.result == "refused"
    assert "the bulkhead cannot shrink below its in-flight calls" in result.message
    assert calls == []
    assert store.current.version == 1


def test_a_check_that_raises_vetoes(store, config) -> None:
    """A broken check is a veto, named: nothing half-checked is applied."""

    def broken(old, new):
        raise RuntimeError("boom")

    store.subscribe(broken, lambda o, n: None, name="breakers")
    rewrite(config, "THRESHOLD=10", "THRESHOLD=3")
    result = store.reload("test")
    assert (result.result, store.current.version) == ("refused", 1)
    assert "the check of breakers raised RuntimeError" in result.message


def test_subscribers_apply_in_order_and_a_failure_is_reported(store, config, registry, caplog) -> None:
    """Every apply runs in subscription order; one that raises is named in a 'failed' result, the rest still apply, the new version is in force."""
    calls = []

    def broken(old, new):
        calls.append("broken")
        raise RuntimeError(f"could not resize (key {AE_KEY})")

    store.subscribe(lambda o, n: [], lambda o, n: calls.append("first"))
    store.subscribe(None, broken, name="bulkheads")
    store.subscribe(None, lambda o, n: calls.append("third"))
    rewrite(config, "THRESHOLD=10", "THRESHOLD=3")
    with caplog.at_level(logging.ERROR, "settings.store"):
        result = store.reload("test")
    assert calls == ["first", "broken", "third"]
    assert result.result == "failed"
    assert "bulkheads (RuntimeError: could not resize (key ***))" in result.message
    assert AE_KEY not in result.message
    assert store.current.version == 2
    assert store.settings.analysis_engine.circuit_breaker_failure_threshold == 3
    assert reloads(registry, "failed") == 1
    assert any("bulkheads" in r.getMessage() for r in caplog.records)


def test_unsubscribe(store, config) -> None:
    """The function subscribe returns ends the subscription."""
    calls = []
    unsubscribe = store.subscribe(None, lambda o, n: calls.append(n))
    unsubscribe()
    rewrite(config, "THRESHOLD=10", "THRESHOLD=3")
    assert store.reload("test").result == "applied"
    assert calls == []


def test_a_reload_from_inside_apply_is_refused(store, config) -> None:
    """Reloads are serialised: one asked for while another is being applied is refused, not nested."""
    inner = []
    store.subscribe(None, lambda o, n: inner.append(store.reload("nested")))
    rewrite(config, "THRESHOLD=10", "THRESHOLD=3")
    assert store.reload("test").result == "applied"
    assert inner[0].result == "refused"


def test_the_log_level_is_live(store, config) -> None:
    """log_level applies at once: the root logger's level follows the file."""
    logging.getLogger().setLevel(logging.INFO)
    config.write_text(BASE + "APP_LOG_LEVEL=WARNING\n")
    assert store.reload("test").result == "applied"
    assert logging.getLogger().level == logging.WARNING


# the redacted view


def test_redacted_holds_no_secret(tmp_path, registry) -> None:
    """API keys, the admin token, the Redis URL and credentials inside a URL never appear; the rest does."""
    token = "admin-token-abcdefghijklmnop"
    path = tmp_path / "app.env"
    path.write_text(
        BASE
        + f"APP_ADMIN_TOKEN={token}\n"
        + "APP_REDIS_URL=redis://:redis-pass-4321@127.0.0.1:6379/0\n"
        + "APP_OTLP_ENDPOINT=https://otel-user:otel-pass-8765@collector:4318/v1/traces?api_key=otel-key-1111&x=1\n"
    )
    store = ConfigStore("test", path=path, registry=registry)
    view = store.redacted()
    text = orjson.dumps(view).decode()  # JSON-able as is
    for secret in (AE_KEY, MLW_KEY, token, "redis-pass-4321", "otel-user", "otel-pass-8765", "otel-key-1111"):
        assert secret not in text
    settings = view["settings"]
    assert settings["upstreams"]["analysis_engine"]["api_key"] == "***"
    assert settings["admin_token"] == "***"
    assert settings["redis_url"] == "***"
    assert settings["otlp_endpoint"] == "https://***:***@collector:4318/v1/traces?api_key=***&x=1"
    assert settings["upstreams"]["analysis_engine"]["retry_on_status"] == [429, 502, 503, 504]
    assert settings["upstreams"]["analysis_engine"]["api_key_header"] == "X-API-Key"
    assert settings["essential_dependencies"] == ["analysis_engine"]


def test_redacted_shows_the_version_and_the_last_reload(store, config) -> None:
    """version, source, digest, loaded_at and the last reload's result, as the config API shows them."""
    view = store.redacted()
    assert view["version"] == 1
    assert view["source"] == str(config)
    # The redacted settings' digest, not the file's (which would let a secret be guessed offline).
    assert view["digest"] == store.current.settings_digest != store.current.digest
    assert view["loaded_at"] == "2027-01-15T08:00:00.000Z"
    assert view["last_reload"] is None
    assert "port" in view["restart_required_for"]
    config.write_text("APP_LOG_LEVEL=LOUD\n" + BASE)
    store.reload("SIGHUP")
    last = store.redacted()["last_reload"]
    assert (last["result"], last["reason"], last["version"]) == ("invalid", "SIGHUP", 1)
    assert "log_level (APP_LOG_LEVEL)" in last["message"]


def test_a_secret_looking_extra_param_is_masked_in_the_redacted_view(monkeypatch) -> None:
    """An OAuth2 client assertion is a plain string in extra_params: the config API still shows ***."""
    monkeypatch.setenv(
        "APP_ANALYSIS_ENGINE__AUTH__EXTRA_PARAMS",
        '{"client_assertion": "eyJassertion.marker", "resource": "r1"}',
    )
    view = redacted_settings(load_settings("local"))
    params = view["upstreams"]["analysis_engine"]["auth"]["extra_params"]
    assert params == {"client_assertion": "***", "resource": "r1"}
