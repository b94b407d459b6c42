"""ClientConfig.auth: the three kinds, their checks, their variables, and what production refuses."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from app.auth import ApiKeyAuth, BearerAuth, OAuth2ClientCredentialsAuth
from app.clients import ClientConfig
from app.clients.outbound import call_credentials, client_headers
from app.clients.reconfigure import reconfigure_problems
from app.redaction import scrub
from app.resilience.clock import MONOTONIC
from settings import SettingsError, load_settings
from settings.redacted import redacted_settings

BASE = "http://up.test/api"
OAUTH = {
    "type": "oauth2_client_credentials",
    "token_url": "https://auth.test/oauth/token",
    "client_id": "gateway",
    "client_secret": "cs-Marker1e2d3c4b5a",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No APP_ or alias variables leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)


def _errors(**fields) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        ClientConfig(base_url=BASE, **fields)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def test_without_auth_the_seed_api_key_works_as_before() -> None:
    """Without auth (the default) api_key and api_key_header make the fixed headers as before; nothing is asked per call."""
    config = ClientConfig(base_url=BASE, api_key="k-seed-123456", api_key_header="X-Key")
    assert config.auth is None
    assert client_headers(config)["X-Key"] == "k-seed-123456"
    assert "Authorization" not in client_headers(config)
    assert call_credentials(config, MONOTONIC, None) is None


def test_each_kind_by_its_type() -> None:
    """api_key, bearer and oauth2_client_credentials parse into their models, with their defaults."""
    key = ClientConfig(base_url=BASE, auth={"type": "api_key", "key": "k-auth-123456"}).auth
    assert isinstance(key, ApiKeyAuth)
    assert key.header == "X-API-Key"
    bearer = ClientConfig(base_url=BASE, auth={"type": "bearer", "token": "tok-123456"}).auth
    assert isinstance(bearer, BearerAuth)
    oauth = ClientConfig(base_url=BASE, auth=OAUTH).auth
    assert isinstance(oauth, OAuth2ClientCredentialsAuth)
    assert (oauth.client_auth_method, oauth.refresh_ahead_fraction, oauth.extra_params) == (
        "client_secret_basic",
        0.2,
        {},
    )
    assert "cs-Marker1e2d3c4b5a" not in repr(oauth)


def test_static_kinds_are_fixed_headers() -> None:
    """A bearer token and an auth API key go into the fixed headers; an API key may go alongside a token."""
    bearer = ClientConfig(
        base_url=BASE, api_key="k-both-123456", auth={"type": "bearer", "token": "tok-123456"}
    )
    headers = client_headers(bearer)
    assert headers["Authorization"] == "Bearer tok-123456"
    assert headers["X-API-Key"] == "k-both-123456"
    assert call_credentials(bearer, MONOTONIC, None) is None
    key = ClientConfig(base_url=BASE, auth={"type": "api_key", "key": "k-auth-123456", "header": "X-Key"})
    assert client_headers(key)["X-Key"] == "k-auth-123456"
    assert scrub("tok-123456 k-auth-123456") == "*** ***"


def test_oauth2_is_asked_for_per_call() -> None:
    """OAuth2 credentials stay out of the fixed headers; the client gets a provider for them."""
    config = ClientConfig(base_url=BASE, auth=OAUTH)
    assert "Authorization" not in client_headers(config)
    credentials = call_credentials(config, MONOTONIC, None)
    assert credentials is not None
    assert credentials.header == "Authorization"
    assert credentials.static_value is None
    credentials.close()


@pytest.mark.parametrize(
    ("auth", "where", "says"),
    [
        ({**OAUTH, "token_url": "ftp://auth.test/t"}, "token_url", "absolute http"),
        ({**OAUTH, "token_url": "https://u:p@auth.test/t"}, "token_url", "credentials"),
        ({**OAUTH, "token_url": "https://auth.test/t?x=1"}, "token_url", "extra_params"),
        ({**OAUTH, "client_secret": "two\nlines"}, "client_secret", "header value"),
        ({**OAUTH, "extra_params": {"scope": "x"}}, "extra_params", "set by the grant itself"),
        ({**OAUTH, "refresh_ahead_fraction": 1.5}, "refresh_ahead_fraction", "less than 1"),
        ({**OAUTH, "client_auth_method": "private_key_jwt"}, "client_auth_method", "client_secret_basic"),
        ({**OAUTH, "surprise": 1}, "surprise", "Extra inputs"),
        ({"type": "bearer"}, "token", "Field required"),
        ({"type": "bearer", "token": " padded"}, "token", "header value"),
        ({"type": "api_key", "key": "k-123456", "header": "Bad Header"}, "header", "header name"),
    ],
)
def test_a_bad_field_is_named_at_its_own_place(auth, where, says) -> None:
    """Errors sit at auth.<field> (not under the kind's tag), so each has its variable; no value is shown."""
    ((loc, msg),) = _errors(auth=auth)
    assert loc == ("auth", where)
    assert says in msg


def test_an_unknown_kind_names_the_kinds() -> None:
    """A type that is no kind says which ones there are."""
    ((loc, msg),) = _errors(auth={"type": "kerberos"})
    assert loc == ("auth",)
    assert "'api_key', 'bearer', 'oauth2_client_credentials'" in msg


def test_the_refresh_must_come_before_expiry() -> None:
    """refresh_ahead_fraction + refresh_jitter_fraction under 1, and token retry delays in order."""
    ((_, msg),) = _errors(auth={**OAUTH, "refresh_ahead_fraction": 0.6, "refresh_jitter_fraction": 0.5})
    assert "must be below 1" in msg


def test_one_credential_per_header() -> None:
    """Two API keys, or an API key in Authorization next to a token, are refused."""
    ((_, msg),) = _errors(api_key="k-123456", auth={"type": "api_key", "key": "k-654321"})
    assert "not both" in msg
    ((_, msg),) = _errors(
        api_key="k-123456", api_key_header="authorization", auth={"type": "bearer", "token": "t-123456"}
    )
    assert "clash" in msg


def test_variables_set_every_part_and_null_unsets(monkeypatch) -> None:
    """APP_<UPSTREAM>__AUTH__<FIELD> for each field (extra params as JSON or one by one); AUTH=null is none."""
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TYPE", "oauth2_client_credentials")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL", "http://127.0.0.1:9000/oauth/token")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__CLIENT_ID", "gateway")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET", "cs-Marker1e2d3c4b5a")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__AUDIENCE", "analysis-engine")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__EXTRA_PARAMS", '{"resource": "urn:ae"}')
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__BASE_URL", "http://127.0.0.1:9100/api")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__TYPE", "bearer")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__TOKEN", "tok-Marker9a8b7c")
    settings = load_settings()
    auth = settings.analysis_engine.auth
    assert isinstance(auth, OAuth2ClientCredentialsAuth)
    assert (auth.audience, auth.extra_params) == ("analysis-engine", {"resource": "urn:ae"})
    assert isinstance(settings.upstream("pricing").auth, BearerAuth)
    view = str(redacted_settings(settings))
    assert "cs-Marker1e2d3c4b5a" not in view
    assert "tok-Marker9a8b7c" not in view
    assert "http://127.0.0.1:9000/oauth/token" in view
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH", "null")
    for name in [n for n in os.environ if n.startswith("APP_ANALYSIS_ENGINE__AUTH__")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__EXTRA_PARAMS__RESOURCE", "x")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__TYPE", "oauth2_client_credentials")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__TOKEN_URL", "http://127.0.0.1:9000/oauth/token")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__CLIENT_ID", "gateway")
    monkeypatch.setenv("APP_UPSTREAMS__PRICING__AUTH__CLIENT_SECRET", "cs-Marker1e2d3c4b5a")
    monkeypatch.delenv("APP_UPSTREAMS__PRICING__AUTH__TOKEN")
    settings = load_settings()
    assert settings.analysis_engine.auth is None
    pricing = settings.upstream("pricing").auth
    assert isinstance(pricing, OAuth2ClientCredentialsAuth)
    assert pricing.extra_params == {"resource": "x"}


@pytest.mark.parametrize(
    ("var", "value", "names"),
    [
        (
            "APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL",
            "ftp://auth.test/token",
            "analysis_engine.auth.token_url (APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL)",
        ),
        (
            "APP_ANALYSIS_ENGINE__AUTH__TOKEN_TIMEOUT_SECONDS",
            "-1",
            "analysis_engine.auth.token_timeout_seconds (APP_ANALYSIS_ENGINE__AUTH__TOKEN_TIMEOUT_SECONDS)",
        ),
        (
            "APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET",
            "line\rbreak-Marker",
            "analysis_engine.auth.client_secret (APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET)",
        ),
    ],
)
def test_a_bad_variable_is_one_line_naming_field_and_variable(monkeypatch, var, value, names) -> None:
    """As every other setting: one line, the field and its variable, never the value."""
    for name, good in {
        "APP_ANALYSIS_ENGINE__AUTH__TYPE": "oauth2_client_credentials",
        "APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL": "https://auth.test/token",
        "APP_ANALYSIS_ENGINE__AUTH__CLIENT_ID": "gateway",
        "APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET": "cs-Marker1e2d3c4b5a",
    }.items():
        monkeypatch.setenv(name, good)
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert names in message
    assert value not in message.replace(names, "")


def _production(monkeypatch, **auth: str) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__API_KEY", "k8s-secret-ae-1f2e3d")
    monkeypatch.setenv("APP_ML_WORKBENCH__API_KEY", "k8s-secret-ml-4c5b6a")
    for field, value in auth.items():
        monkeypatch.setenv(f"APP_ANALYSIS_ENGINE__AUTH__{field.upper()}", value)


def test_production_refuses_a_placeholder_client_secret(monkeypatch) -> None:
    """A placeholder client secret (or bearer token) stops production at start, naming its variable."""
    _production(
        monkeypatch,
        type="oauth2_client_credentials",
        token_url="https://auth.test/token",
        client_id="gateway",
        client_secret="REPLACE_ME",
    )
    with pytest.raises(
        SettingsError,
        match=r"analysis_engine.auth.client_secret \(APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET\) is a placeholder",
    ):
        load_settings()
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__CLIENT_SECRET", "k8s-client-secret-7d6c5b")
    assert load_settings().env == "production"
    for name in ("TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(f"APP_ANALYSIS_ENGINE__AUTH__{name}")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TYPE", "bearer")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TOKEN", "changeme")
    with pytest.raises(
        SettingsError, match=r"auth.token \(APP_ANALYSIS_ENGINE__AUTH__TOKEN\) is a placeholder"
    ):
        load_settings()


def test_production_refuses_a_token_url_over_plain_http_off_loopback(monkeypatch) -> None:
    """The client secret must not cross the network in clear: plain http is refused unless on loopback or allowed."""
    _production(
        monkeypatch,
        type="oauth2_client_credentials",
        token_url="http://auth.internal/oauth/token",
        client_id="gateway",
        client_secret="k8s-client-secret-7d6c5b",
    )
    with pytest.raises(
        SettingsError,
        match=r"auth.token_url \(APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL\) is plain http to auth\.internal",
    ):
        load_settings()
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL", "http://127.0.0.1:9000/oauth/token")
    assert load_settings().env == "production"
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL", "http://auth.internal/oauth/token")
    monkeypatch.setenv("APP_ALLOW_INSECURE_HTTP", "true")
    assert load_settings().env == "production"


def test_oauth2_credentials_do_not_change_live_but_static_ones_do() -> None:
    """A token cache is made at start: switching to, from or within OAuth2 needs a restart; a bearer token rotates live."""
    plain = ClientConfig(base_url=BASE)
    bearer = ClientConfig(base_url=BASE, auth={"type": "bearer", "token": "tok-123456"})
    rotated = ClientConfig(base_url=BASE, auth={"type": "bearer", "token": "tok-654321"})
    oauth = ClientConfig(base_url=BASE, auth=OAUTH)
    other = ClientConfig(base_url=BASE, auth={**OAUTH, "audience": "another"})
    assert reconfigure_problems(plain, bearer) == []
    assert reconfigure_problems(bearer, rotated) == []
    for old, new in ((plain, oauth), (oauth, bearer), (oauth, other)):
        (problem,) = reconfigure_problems(old, new, "pricing")
        assert problem.startswith("auth (APP_UPSTREAMS__PRICING__AUTH) cannot change without a restart")
    assert reconfigure_problems(oauth, ClientConfig(base_url=BASE, auth=OAUTH)) == []
