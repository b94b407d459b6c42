"""The reference token service over HTTP: the client-credentials grant, its errors, its JWKS and its hooks."""

from __future__ import annotations

import base64
import json
import logging
import time

import jwt
import pytest

from tests.support.asgi import serve
from tests.upstreams.tokens import (
    CLIENTS,
    GATEWAY_SECRET,
    ISSUER,
    READER_ID,
    READER_SECRET,
    auth_settings,
    basic,
    request_token,
    token_for,
)
from upstreams.auth.service import AuthSettings, create_app


@pytest.fixture
async def auth():
    async with serve(create_app(auth_settings())) as url:
        yield url


async def jwks(http, auth: str) -> jwt.PyJWKSet:
    async with http.get(f"{auth}/.well-known/jwks.json") as resp:
        assert resp.status == 200
        return jwt.PyJWKSet.from_dict(await resp.json())


async def verified(http, auth: str, token: str, audience: str) -> dict:
    """The claims of ``token``, checked against the service's JWKS as any resource server would."""
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(
        token, (await jwks(http, auth))[kid].key, algorithms=["RS256"], audience=audience, issuer=ISSUER
    )


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_token_issued_for_basic_and_post_authentication(http, auth, method) -> None:
    """client_secret_basic and client_secret_post both get a Bearer JWT, uncacheable, that verifies against the JWKS."""
    status, headers, body = await request_token(
        http, auth, method=method, audience="ml-workbench", scope="predict read"
    )
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "predict read"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["kid"]
    claims = await verified(http, auth, body["access_token"], "ml-workbench")
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "gateway"
    assert claims["aud"] == "ml-workbench"
    assert claims["scope"] == "predict read"
    assert claims["iat"] == claims["nbf"]
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 5
    assert len(claims["jti"]) >= 16


async def test_basic_credentials_are_form_urlencoded(http, auth) -> None:
    """A client id and secret with spaces, colons, plus signs and non-ASCII work once form-urlencoded (RFC 6749 §2.3.1)."""
    status, _, body = await request_token(http, auth, client_id=READER_ID, secret=READER_SECRET)
    assert status == 200, body
    assert (await verified(http, auth, body["access_token"], "analysis-engine"))["sub"] == READER_ID


async def test_every_token_is_new(http, auth) -> None:
    """Two requests get two tokens with two jtis."""
    first = await token_for(http, auth, "analysis-engine")
    second = await token_for(http, auth, "analysis-engine")
    assert first != second
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


@pytest.mark.parametrize(
    ("method", "client_id", "secret"),
    [
        ("basic", "gateway", "wrong"),
        ("post", "gateway", "wrong"),
        ("basic", "gateway", GATEWAY_SECRET + "x"),
        ("basic", "nobody", GATEWAY_SECRET),
        ("post", "nobody", "whatever"),
    ],
)
async def test_bad_client_credentials_are_401_invalid_client(http, auth, method, client_id, secret) -> None:
    """A wrong secret or an unknown client is 401 invalid_client with a Basic challenge, whatever the method."""
    status, headers, body = await request_token(http, auth, method=method, client_id=client_id, secret=secret)
    assert status == 401
    assert body["error"] == "invalid_client"
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert headers["Cache-Control"] == "no-store"
    assert "access_token" not in body


@pytest.mark.parametrize(
    ("headers", "form", "status", "error"),
    [
        ({}, {"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"Authorization": "Bearer abc"}, {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (
            {"Authorization": "Basic !!!not-base64"},
            {"grant_type": "client_credentials"},
            401,
            "invalid_client",
        ),
        ({"Authorization": basic("gateway", GATEWAY_SECRET)}, {}, 400, "invalid_request"),
        (
            {"Authorization": basic("gateway", GATEWAY_SECRET)},
            {"grant_type": "password"},
            400,
            "unsupported_grant_type",
        ),
        (
            {"Authorization": basic("gateway", GATEWAY_SECRET)},
            {"grant_type": "client_credentials", "client_id": "gateway", "client_secret": GATEWAY_SECRET},
            400,
            "invalid_request",
        ),
        (
            {"Authorization": basic("gateway", GATEWAY_SECRET)},
            {"grant_type": "client_credentials", "client_id": "other"},
            400,
            "invalid_request",
        ),
    ],
)
async def test_malformed_requests(http, auth, headers, form, status, error) -> None:
    """No credentials, another scheme, bad base64, no grant_type, another grant, two auth methods: RFC 6749 §5.2 errors."""
    async with http.post(
        f"{auth}/oauth/token", data={"audience": "analysis-engine", **form}, headers=headers
    ) as resp:
        body = await resp.json()
    assert resp.status == status, body
    assert body["error"] == error
    assert body["error_description"]


async def test_body_must_be_a_form_sent_once(http, auth) -> None:
    """A JSON body, a parameter sent twice, or credentials in the query string are invalid_request."""
    headers = {"Authorization": basic("gateway", GATEWAY_SECRET)}
    async with http.post(
        f"{auth}/oauth/token", json={"grant_type": "client_credentials"}, headers=headers
    ) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    twice = "grant_type=client_credentials&audience=analysis-engine&audience=ml-workbench"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    async with http.post(f"{auth}/oauth/token", data=twice, headers={**headers, **form_type}) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    async with http.post(
        f"{auth}/oauth/token?client_id=gateway&client_secret=x",
        data={"grant_type": "client_credentials"},
        headers=headers,
    ) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    async with http.post(
        f"{auth}/oauth/token", data="a=" + "x" * 20_000, headers={**headers, **form_type}
    ) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")


async def test_audience_must_be_one_the_client_may_have(http, auth) -> None:
    """An audience not configured for the client is invalid_target; none with several is invalid_request; none with one is that one."""
    status, _, body = await request_token(http, auth, audience="billing")
    assert (status, body["error"]) == (400, "invalid_target")
    status, _, body = await request_token(
        http, auth, client_id=READER_ID, secret=READER_SECRET, audience="ml-workbench"
    )
    assert (status, body["error"]) == (400, "invalid_target")
    status, _, body = await request_token(http, auth)
    assert (status, body["error"]) == (400, "invalid_request")
    assert "audience" in body["error_description"]
    status, _, body = await request_token(http, auth, client_id=READER_ID, secret=READER_SECRET)
    assert status == 200
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == "analysis-engine"


async def test_scope_within_what_the_client_may_have(http, auth) -> None:
    """A client with scopes gets them all when it asks for none, a subset when it asks, and invalid_scope beyond them."""
    reader = {"client_id": READER_ID, "secret": READER_SECRET}
    status, _, body = await request_token(http, auth, **reader)
    assert (status, body["scope"]) == (200, "prices:read regime:read")
    status, _, body = await request_token(http, auth, **reader, scope="regime:read")
    assert (status, body["scope"]) == (200, "regime:read")
    status, _, body = await request_token(http, auth, **reader, scope="regime:read admin")
    assert (status, body["error"]) == (400, "invalid_scope")
    status, _, body = await request_token(http, auth, **reader, scope='bad"scope')
    assert (status, body["error"]) == (400, "invalid_scope")
    status, _, body = await request_token(http, auth, audience="analysis-engine")
    assert (status, body["scope"]) == (200, "")


async def test_jwks_publishes_the_public_key_only(http, auth) -> None:
    """The JWKS holds one RSA signing key with kid, use=sig and alg=RS256, and no private member."""
    async with http.get(f"{auth}/.well-known/jwks.json") as resp:
        document = await resp.json()
    (key,) = document["keys"]
    assert key["kty"] == "RSA"
    assert (key["use"], key["alg"]) == ("sig", "RS256")
    assert key["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    token = await token_for(http, auth, "analysis-engine")
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]


async def test_metadata(http, auth) -> None:
    """RFC 8414 metadata names the issuer, the token endpoint, the JWKS and the two auth methods."""
    async with http.get(f"{auth}/.well-known/oauth-authorization-server") as resp:
        meta = await resp.json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{auth}/oauth/token"
    assert meta["jwks_uri"] == f"{auth}/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}


async def test_a_restart_has_a_new_key(http, auth) -> None:
    """Each start generates its own key: a token of one instance does not verify with another's JWKS."""
    token = await token_for(http, auth, "analysis-engine")
    async with serve(create_app(auth_settings())) as other:
        keys = await jwks(http, other)
    assert jwt.get_unverified_header(token)["kid"] not in {key.key_id for key in keys.keys}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, keys.keys[0].key, algorithms=["RS256"], audience="analysis-engine")


async def test_stats_count_token_requests_by_client(http, auth) -> None:
    """GET /oauth/stats counts requests, tokens and refusals by client, failed authentications apart; DELETE zeroes them."""
    await token_for(http, auth, "analysis-engine")
    await token_for(http, auth, "ml-workbench")
    await request_token(http, auth, audience="billing")
    await request_token(http, auth, secret="wrong", audience="analysis-engine")
    await request_token(http, auth, client_id=READER_ID, secret=READER_SECRET)
    async with http.get(f"{auth}/oauth/stats") as resp:
        stats = await resp.json()
    assert stats["clients"]["gateway"] == {"requests": 3, "issued": 2, "refused": 1}
    assert stats["clients"][READER_ID] == {"requests": 1, "issued": 1, "refused": 0}
    assert (stats["requests"], stats["issued"], stats["unauthenticated"]) == (5, 3, 1)
    async with http.delete(f"{auth}/oauth/stats") as resp:
        assert (await resp.json())["requests"] == 0


async def test_chaos_makes_the_token_endpoint_fail_or_slow(http, auth) -> None:
    """PUT /api/v1/chaos hits /oauth/token only: errors and latency there, the JWKS and the stats untouched."""
    async with http.put(
        f"{auth}/api/v1/chaos", json={"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 2}
    ) as resp:
        assert resp.status == 200
    status, headers, body = await request_token(http, auth, audience="analysis-engine")
    assert (status, headers["Retry-After"], body["code"]) == (503, "2", "chaos")
    async with http.get(f"{auth}/.well-known/jwks.json") as resp:
        assert resp.status == 200
    async with http.get(f"{auth}/oauth/stats") as resp:
        assert (await resp.json())["requests"] == 0  # refused before it reached the endpoint
    async with http.put(f"{auth}/api/v1/chaos", json={"latency_ms": 300}) as resp:
        assert resp.status == 200
    started = time.monotonic()
    await token_for(http, auth, "analysis-engine")
    assert 0.3 <= time.monotonic() - started < 1.5
    async with http.delete(f"{auth}/api/v1/chaos") as resp:
        assert resp.status == 200


async def test_no_stats_or_chaos_in_production(http) -> None:
    """In production the test hooks are not served; tokens still are."""
    async with serve(create_app(auth_settings(app_env="production"))) as url:
        for path in ("/oauth/stats", "/api/v1/chaos"):
            async with http.get(url + path) as resp:
                assert resp.status == 404
        assert await token_for(http, url, "analysis-engine")


async def test_settings_from_the_environment(monkeypatch) -> None:
    """AUTH_CLIENTS is JSON; secrets are SecretStr, hidden from repr; the TTL comes from AUTH_TOKEN_TTL_SECONDS."""
    monkeypatch.setenv("AUTH_CLIENTS", json.dumps(CLIENTS))
    monkeypatch.setenv("AUTH_TOKEN_TTL_SECONDS", "30")
    settings = AuthSettings()
    assert settings.clients["gateway"].secret.get_secret_value() == GATEWAY_SECRET
    assert GATEWAY_SECRET not in repr(settings)
    assert settings.token_ttl_seconds == 30
    assert settings.port == 8003
    assert settings.issuer_url == "http://127.0.0.1:8003"


async def test_short_ttl(http) -> None:
    """With a 30 s lifetime the token says so, in expires_in and in exp."""
    async with serve(create_app(auth_settings(token_ttl_seconds=30))) as url:
        status, _, body = await request_token(http, url, audience="analysis-engine")
    assert status == 200
    assert body["expires_in"] == 30
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 30


async def test_no_secret_or_token_in_the_logs(http, auth, caplog) -> None:
    """Issuing and refusing tokens logs the client and the jti, never a secret, a token or a credential header."""
    caplog.set_level(logging.DEBUG)
    issued = [await token_for(http, auth, "analysis-engine")]
    status, _, body = await request_token(
        http, auth, method="post", client_id=READER_ID, secret=READER_SECRET
    )
    assert status == 200
    issued.append(body["access_token"])
    await request_token(http, auth, secret="wrong-secret-value", audience="analysis-engine")
    await request_token(http, auth, client_id=GATEWAY_SECRET, secret=GATEWAY_SECRET)  # id and secret swapped
    text = caplog.text
    assert "issued a token to gateway" in text
    assert "invalid_client" in text
    credentials = basic("gateway", GATEWAY_SECRET).split()[1]
    for secret in (
        GATEWAY_SECRET,
        READER_SECRET,
        "wrong-secret-value",
        credentials,
        *issued,
        *(t.split(".")[2] for t in issued),
    ):
        assert secret not in text
    assert base64.b64encode(GATEWAY_SECRET.encode()).decode() not in text
