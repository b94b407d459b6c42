"""Bearer JWTs on the reference upstreams: issued by the token service, checked against its JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tests.support.asgi import serve
from tests.upstreams.tokens import (
    CLIENTS,
    GATEWAY_SECRET,
    ISSUER,
    auth_settings,
    basic,
    request_token,
    token_for,
)
from upstreams.analysis_engine.service import AnalysisEngineSettings
from upstreams.analysis_engine.service import create_app as create_ae
from upstreams.auth.keys import Signer
from upstreams.auth.service import create_app as create_auth
from upstreams.common.jwt_auth import InvalidTokenError, JwksUnavailableError, JwtVerifier
from upstreams.ml_workbench.service import MLWorkbenchSettings
from upstreams.ml_workbench.service import create_app as create_ml

ROOT = Path(__file__).resolve().parents[2]


def ae_settings(auth: str, **overrides) -> AnalysisEngineSettings:
    fields = {
        "app_env": "test",
        "jwks_url": f"{auth}/.well-known/jwks.json",
        "audience": "analysis-engine",
        "issuer": ISSUER,
    }
    fields.update(overrides)
    return AnalysisEngineSettings(**fields)


@asynccontextmanager
async def platform(ttl: int = 300, **ae_overrides):
    """The token service, an Analysis Engine and an ML Workbench that want its tokens."""
    signer = Signer()
    async with serve(create_auth(auth_settings(token_ttl_seconds=ttl), signer=signer)) as auth:
        ml_settings = MLWorkbenchSettings(
            app_env="test", jwks_url=f"{auth}/.well-known/jwks.json", audience="ml-workbench"
        )
        async with (
            serve(create_ae(ae_settings(auth, **ae_overrides))) as ae,
            serve(create_ml(ml_settings)) as ml,
        ):
            yield SimpleNamespace(auth=auth, ae=ae + "/api/v1", ml=ml + "/api/v1", signer=signer)


@pytest.fixture
async def up():
    async with platform() as p:
        yield p


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "gateway",
        "aud": "analysis-engine",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": os.urandom(8).hex(),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def get(
    http, url: str, token: str | None = None, headers: dict | None = None
) -> tuple[int, dict, dict]:
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_valid_token_is_accepted(http, up) -> None:
    """Each upstream answers a call that carries a token issued for its own audience."""
    status, _, body = await get(
        http, f"{up.ae}/prices/EURUSD?limit=1", await token_for(http, up.auth, "analysis-engine")
    )
    assert status == 200, body
    status, _, body = await get(http, f"{up.ml}/models", await token_for(http, up.auth, "ml-workbench"))
    assert status == 200, body


@pytest.mark.parametrize("authorization", [None, "Basic Z2F0ZXdheTp4", "Bearer", "Bearer   "])
async def test_missing_token_is_refused(http, up, authorization) -> None:
    """No bearer token: 401 with a Bearer challenge (no error code, RFC 6750 §3.1) and the API-key error shape."""
    headers = {} if authorization is None else {"Authorization": authorization}
    status, headers, body = await get(http, f"{up.ae}/prices/EURUSD", headers=headers)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="analysis-engine"'
    assert set(body) == {"detail", "code"}
    assert body["code"] == "unauthorized"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(signer: Signer) -> str:
    # The classic confusion attack: the public key used as an HMAC secret (pyjwt will not sign it, so by hand).
    pem = jwt.PyJWK(signer.jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": signer.kid}).encode())
    body = _b64(json.dumps(claims()).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: "garbage", "malformed"),
        (lambda s: "a.b.c", "malformed"),
        (lambda s: s.sign(claims())[:-6] + "AAAAAA", "signature"),
        (lambda s: jwt.encode(claims(), None, algorithm="none"), "RS256"),
        (_hs256_with_public_key, "RS256"),
        (
            lambda s: jwt.encode(
                claims(),
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                algorithm="RS256",
                headers={"kid": s.kid},
            ),
            "signature",
        ),
        (
            lambda s: jwt.encode(
                claims(),
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                algorithm="RS256",
                headers={"kid": "nope"},
            ),
            "unknown key",
        ),
        (
            lambda s: jwt.encode(
                claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"
            ),
            "kid",
        ),
        (lambda s: s.sign(claims(nbf=int(time.time()) + 120)), "not valid yet"),
        (lambda s: s.sign(claims(iss="https://elsewhere.test")), "issuer"),
        (lambda s: s.sign(claims(iss=None)), "iss"),
        (lambda s: s.sign(claims(exp=None)), "exp"),
        (lambda s: s.sign(claims(aud="ml-workbench")), "analysis-engine"),
        (lambda s: s.sign(claims(aud=None)), "aud"),
    ],
    ids=[
        "garbage",
        "three-parts",
        "bad-signature",
        "alg-none",
        "hs256-confusion",
        "forged-same-kid",
        "unknown-kid",
        "no-kid",
        "nbf-future",
        "wrong-issuer",
        "no-issuer",
        "no-exp",
        "wrong-audience",
        "no-audience",
    ],
)
async def test_invalid_tokens_are_refused(http, up, make, reason) -> None:
    """Garbage, forged, mis-signed, not yet valid, foreign or incomplete tokens: 401 invalid_token, saying why."""
    status, headers, body = await get(http, f"{up.ae}/prices/EURUSD", make(up.signer))
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith('Bearer realm="analysis-engine", error="invalid_token"')
    assert body["code"] == "unauthorized"
    assert reason in body["detail"]


async def test_wrong_audience_is_refused(http, up) -> None:
    """A real token for the ML Workbench is refused by the Analysis Engine, and the other way round."""
    status, _, body = await get(
        http, f"{up.ae}/prices/EURUSD", await token_for(http, up.auth, "ml-workbench")
    )
    assert (status, body["detail"]) == (401, "invalid bearer token: token not issued for analysis-engine")
    status, _, _ = await get(http, f"{up.ml}/models", await token_for(http, up.auth, "analysis-engine"))
    assert status == 401


async def test_expired_token_is_refused(http) -> None:
    """A real short-lived token is accepted, then refused once it has expired (no leeway here)."""
    # 2 s, not 1: exp is a whole second, so a 1 s token issued late in a second lives only
    # a fraction of one, and a loaded run's first call could come after it (seen in CI).
    async with platform(ttl=2, jwt_leeway_seconds=0) as p:
        token = await token_for(http, p.auth, "analysis-engine")
        status, _, _ = await get(http, f"{p.ae}/prices/EURUSD?limit=1", token)
        assert status == 200
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.1)
        status, headers, body = await get(http, f"{p.ae}/prices/EURUSD?limit=1", token)
    assert status == 401
    assert body["detail"] == "invalid bearer token: token expired"
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


async def test_expiry_has_a_small_leeway(http, up) -> None:
    """With the default 5 s leeway, a token 2 s past exp still passes; 30 s past, it does not."""
    now = int(time.time())
    assert (
        await get(http, f"{up.ae}/prices/EURUSD?limit=1", up.signer.sign(claims(iat=now - 60, exp=now - 2)))
    )[0] == 200
    assert (
        await get(http, f"{up.ae}/prices/EURUSD?limit=1", up.signer.sign(claims(iat=now - 60, exp=now - 30)))
    )[0] == 401


async def test_chaos_and_health_need_no_token(http, up) -> None:
    """/api/v1/chaos and /health stay open; chaos still hits the API calls of a caller with a token."""
    async with http.put(f"{up.ae}/chaos", json={"error_rate": 1.0}) as resp:
        assert resp.status == 200
    async with http.get(f"{up.ae}/chaos") as resp:
        assert resp.status == 200
    async with http.get(up.ae.removesuffix("/api/v1") + "/health") as resp:
        assert resp.status == 200
    token = await token_for(http, up.auth, "analysis-engine")
    assert (await get(http, f"{up.ae}/prices/EURUSD", token))[0] == 503
    async with http.delete(f"{up.ae}/chaos") as resp:
        assert resp.status == 200


async def test_jwt_wins_over_the_api_key(http) -> None:
    """With both an API key and a JWKS configured, the key alone is refused and the token is required."""
    async with platform(api_key="ae-key-123456") as p:
        status, _, _ = await get(
            http, f"{p.ae}/prices/EURUSD?limit=1", headers={"X-API-Key": "ae-key-123456"}
        )
        assert status == 401
        token = await token_for(http, p.auth, "analysis-engine")
        assert (await get(http, f"{p.ae}/prices/EURUSD?limit=1", token))[0] == 200


async def test_api_key_alone_is_unchanged(http) -> None:
    """With only an API key, the key is what counts, and a bearer token is no substitute."""
    async with serve(create_ae(AnalysisEngineSettings(app_env="test", api_key="ae-key-123456"))) as url:
        assert (
            await get(http, f"{url}/api/v1/prices/EURUSD?limit=1", headers={"X-API-Key": "ae-key-123456"})
        )[0] == 200
        status, _, body = await get(http, f"{url}/api/v1/prices/EURUSD?limit=1", "some-token")
        assert (status, body["code"]) == (401, "unauthorized")


async def test_revoked_tokens_are_refused(http, up) -> None:
    """After POST /api/v1/chaos/revoke-tokens, 100 concurrent calls with the old token are 401; a new token passes."""
    old = await token_for(http, up.auth, "analysis-engine")
    assert (await get(http, f"{up.ae}/prices/EURUSD?limit=1", old))[0] == 200
    async with http.post(f"{up.ae}/chaos/revoke-tokens") as resp:
        assert (resp.status, await resp.json()) == (200, {"revoked": 1})
    results = await asyncio.gather(*(get(http, f"{up.ae}/prices/EURUSD?limit=1", old) for _ in range(100)))
    assert {status for status, _, _ in results} == {401}
    assert results[0][2]["detail"] == "invalid bearer token: token revoked"
    new = await token_for(http, up.auth, "analysis-engine")
    assert (await get(http, f"{up.ae}/prices/EURUSD?limit=1", new))[0] == 200


async def test_no_revocation_hook_in_production(http, up) -> None:
    """In production the revocation hook, like chaos, is not served."""
    settings = ae_settings(up.auth, app_env="production")
    async with serve(create_ae(settings)) as url:
        async with http.post(f"{url}/api/v1/chaos/revoke-tokens") as resp:
            assert resp.status in {401, 404}
        token = await token_for(http, up.auth, "analysis-engine")
        assert (await get(http, f"{url}/api/v1/prices/EURUSD?limit=1", token))[0] == 200


async def test_unreachable_jwks_is_503_not_401(http) -> None:
    """When the key set cannot be fetched the upstream cannot judge a token: 503 jwks_unavailable, not 401."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    settings = ae_settings(f"http://127.0.0.1:{port}")
    async with serve(create_ae(settings)) as url:
        status, headers, body = await get(http, f"{url}/api/v1/prices/EURUSD", Signer().sign(claims()))
    assert (status, body["code"]) == (503, "jwks_unavailable")
    assert headers["Retry-After"] == "1"


class JwksServer:
    """A JWKS endpoint whose keys a test swaps, counting its fetches, and failing on demand."""

    def __init__(self, *signers: Signer) -> None:
        self.keys = [s.jwk for s in signers]
        self.fetches = 0
        self.failing = False
        self.delay = 0.0
        self.app = FastAPI()

        @self.app.get("/jwks")
        async def jwks() -> JSONResponse:
            self.fetches += 1
            await asyncio.sleep(self.delay)
            if self.failing:
                return JSONResponse({"detail": "down"}, status_code=503)
            return JSONResponse({"keys": self.keys})


async def test_one_fetch_for_many_concurrent_calls() -> None:
    """100 concurrent first calls fetch the key set once; 100 forged kids at once add at most one fetch."""
    signer = Signer()
    server = JwksServer(signer)
    async with serve(server.app) as url:
        verifier = JwtVerifier(f"{url}/jwks", "analysis-engine")
        results = await asyncio.gather(*(verifier.verify(signer.sign(claims())) for _ in range(100)))
        assert len(results) == 100
        assert server.fetches == 1
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = [
            jwt.encode(claims(), forger, algorithm="RS256", headers={"kid": f"kid-{i}"}) for i in range(100)
        ]
        outcomes = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
        assert all(isinstance(o, InvalidTokenError) for o in outcomes)
        assert server.fetches <= 2


async def test_a_new_kid_refetches_the_key_set() -> None:
    """After the token service's key changes, the first token with the new kid refetches; the old key is gone."""
    old, new = Signer(), Signer()
    server = JwksServer(old)
    async with serve(server.app) as url:
        verifier = JwtVerifier(f"{url}/jwks", "analysis-engine", refresh_cooldown_seconds=0)
        await verifier.verify(old.sign(claims()))
        server.keys = [new.jwk]
        await verifier.verify(new.sign(claims()))
        assert server.fetches == 2
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await verifier.verify(old.sign(claims()))


async def test_keys_held_through_an_outage() -> None:
    """Once the cache is old and the JWKS fails, the keys held stay in use; with none held, JwksUnavailableError."""
    signer = Signer()
    server = JwksServer(signer)
    async with serve(server.app) as url:
        verifier = JwtVerifier(
            f"{url}/jwks", "analysis-engine", cache_seconds=0.05, refresh_cooldown_seconds=0
        )
        await verifier.verify(signer.sign(claims()))
        server.failing = True
        await asyncio.sleep(0.1)
        await verifier.verify(signer.sign(claims()))  # served from the held set; refreshed behind
        for _ in range(100):
            if server.fetches == 2:
                break
            await asyncio.sleep(0.01)
        assert server.fetches == 2
        await verifier.verify(signer.sign(claims()))  # the failed refresh kept the keys
        cold = JwtVerifier(f"{url}/jwks", "analysis-engine")
        with pytest.raises(JwksUnavailableError):
            await cold.verify(signer.sign(claims()))


async def test_a_slow_token_service_never_holds_a_request_with_a_known_key() -> None:
    """The key set is old and the JWKS answers in 1 s: verifications stay instant, one refresh runs behind them."""
    signer = Signer()
    server = JwksServer(signer)
    async with serve(server.app) as url:
        verifier = JwtVerifier(
            f"{url}/jwks", "analysis-engine", cache_seconds=0.05, refresh_cooldown_seconds=0.05
        )
        await verifier.verify(signer.sign(claims()))
        server.delay = 1.0
        await asyncio.sleep(0.1)  # the set is old now
        slowest = 0.0
        for _ in range(25):
            started = time.monotonic()
            await verifier.verify(signer.sign(claims()))
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.02)
        assert slowest < 0.1, slowest  # before: each request queued behind the fetch
        assert server.fetches == 2  # the first, and one refresh still out
        for _ in range(200):  # let the refresh land before the server goes
            if verifier._refresh is None:
                break
            await asyncio.sleep(0.01)
        assert verifier._refresh is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"jwks_url": "http://127.0.0.1:8003/.well-known/jwks.json"}, "go together"),
        ({"audience": "analysis-engine"}, "go together"),
        ({"jwks_url": "file:///etc/passwd", "audience": "a"}, "http(s)"),
        ({"jwks_url": "http://auth.internal/jwks", "audience": "a", "app_env": "production"}, "https"),
    ],
)
def test_jwt_settings_are_checked(fields, problem) -> None:
    """JWKS URL and audience go together, the URL is http(s), and https in production unless on loopback."""
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        AnalysisEngineSettings(**fields)
    AnalysisEngineSettings(jwks_url="http://localhost:8003/jwks", audience="a", app_env="production")
    AnalysisEngineSettings(jwks_url="https://auth.internal/jwks", audience="a", app_env="production")


async def test_no_token_in_the_upstreams_logs(http, up, caplog) -> None:
    """Accepted, refused and revoked tokens leave reasons in the log, never the token."""
    caplog.set_level(logging.DEBUG)
    good = await token_for(http, up.auth, "analysis-engine")
    foreign = await token_for(http, up.auth, "ml-workbench")
    forged = up.signer.sign(claims())[:-6] + "AAAAAA"
    for token in (good, foreign, forged, "not-a-jwt-but-secret-looking"):
        await get(http, f"{up.ae}/prices/EURUSD?limit=1", token)
    async with http.post(f"{up.ae}/chaos/revoke-tokens"):
        pass
    await get(http, f"{up.ae}/prices/EURUSD?limit=1", good)
    text = caplog.text
    assert "bearer token refused" in text
    assert "token revoked" in text
    for token in (good, foreign, forged, "not-a-jwt-but-secret-looking", GATEWAY_SECRET):
        assert token not in text
        assert token.split(".")[-1] not in text


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def _wait_healthy(http, url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not start")


async def test_real_processes_keep_secrets_and_tokens_out_of_their_logs(http, tmp_path) -> None:
    """``python -m upstreams.auth`` and ``python -m upstreams.analysis_engine`` at DEBUG: the whole flow, and no secret or token in their output."""
    auth_port, ae_port = _free_ports(2)
    auth, ae = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{ae_port}/api/v1"
    env = {
        **os.environ,
        "APP_ENV": "local",
        "AUTH_PORT": str(auth_port),
        "AUTH_CLIENTS": json.dumps(CLIENTS),
        "AUTH_TOKEN_TTL_SECONDS": "30",
        "AUTH_LOG_LEVEL": "DEBUG",
        "AE_PORT": str(ae_port),
        "AE_JWKS_URL": f"{auth}/.well-known/jwks.json",
        "AE_AUDIENCE": "analysis-engine",
        "AE_ISSUER": f"http://127.0.0.1:{auth_port}",
        "AE_LOG_LEVEL": "DEBUG",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("auth", "ae")}
    procs = {}
    try:
        for name, module in (("auth", "upstreams.auth"), ("ae", "upstreams.analysis_engine")):
            with logs[name].open("w") as out:
                # Popen only starts them: nothing here waits on the children in the event loop.
                procs[name] = subprocess.Popen(  # noqa: S603, ASYNC220
                    [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
        await _wait_healthy(http, auth, procs["auth"])
        await _wait_healthy(http, ae.removesuffix("/api/v1"), procs["ae"])
        status, _, body = await request_token(http, auth, audience="analysis-engine")
        assert (status, body["expires_in"]) == (200, 30)
        good = body["access_token"]
        status, _, body = await request_token(http, auth, method="post", audience="analysis-engine")
        assert status == 200
        posted = body["access_token"]
        assert (await request_token(http, auth, secret="a-wrong-secret", audience="analysis-engine"))[
            0
        ] == 401
        assert (await get(http, f"{ae}/prices/EURUSD?limit=1", good))[0] == 200
        assert (await get(http, f"{ae}/prices/EURUSD?limit=1", posted + "x"))[0] == 401
        async with http.post(f"{ae}/chaos/revoke-tokens") as resp:
            assert (await resp.json())["revoked"] == 1  # the one accepted; the mangled one never was
        assert (await get(http, f"{ae}/prices/EURUSD?limit=1", good))[0] == 401
        async with http.get(f"{auth}/oauth/stats") as resp:
            assert (await resp.json())["clients"]["gateway"]["issued"] == 2
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            await asyncio.to_thread(proc.wait, 10)
    output = {name: path.read_text() for name, path in logs.items()}
    assert "issued a token to gateway" in output["auth"]
    assert "bearer token refused" in output["ae"]
    credentials = basic("gateway", GATEWAY_SECRET).split()[1]
    for text in output.values():
        for secret in (
            GATEWAY_SECRET,
            "a-wrong-secret",
            credentials,
            good,
            posted,
            good.split(".")[2],
            posted.split(".")[2],
        ):
            assert secret not in text
