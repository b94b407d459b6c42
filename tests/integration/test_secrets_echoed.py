"""An upstream that echoes our API key back never gets it shown: not in errors, logs or gateway answers."""

from __future__ import annotations

import logging
import urllib.parse

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.clients import (
    ClientAuthenticationError,
    ClientError,
    ClientResponseError,
    ClientValidationError,
    ServerError,
)
from app.containers import Container
from app.errors import retry_exhausted
from app.main import create_app
from app.observability.logging import JsonFormatter
from app.redaction import REDACTED, register_secret
from settings import load_settings
from tests.support.asgi import serve
from tests.support.transports import gateway_on
from tests.support.upstream import Upstream

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

# Each key carries a marker: a run of letters and digits that no encoder changes, so
# "the marker appears nowhere" proves no form of the key (raw, percent-encoded,
# JSON-escaped) got through, without relying on the code under test to list the forms.
KEYS = {
    "plain": ("sk-live-echo-Marker7f3a9c2e51", "Marker7f3a9c2e51"),
    "base64": ("b64/Key+Marker9d8c7b6a==", "Marker9d8c7b6a"),
    "quote-backslash": ('q"uote\\Marker5e4d3c2b1a', "Marker5e4d3c2b1a"),
    "space-ampersand": ("sp ace&Marker1f2e3d4c5b", "Marker1f2e3d4c5b"),
}


@pytest.fixture(params=list(KEYS))
def key(request) -> tuple[str, str]:
    return KEYS[request.param]


async def _body(request: web.Request) -> object:
    raw = await request.read()
    return orjson.loads(raw) if raw else None


async def fastapi_422(request: web.Request) -> web.StreamResponse:
    """FastAPI's RequestValidationError answer: every refused input echoed back."""
    detail: list[dict[str, object]] = [
        {
            "type": "string_pattern_mismatch",
            "loc": ["header", "x-api-key"],
            "msg": "String should match pattern",
            "input": request.headers.get("X-API-Key"),
        }
    ]
    detail += [
        {"type": "int_parsing", "loc": ["query", name], "msg": "not an int", "input": value}
        for name, value in request.query.items()
    ]
    body = await _body(request)
    if body is not None:
        detail.append({"type": "model_attributes_type", "loc": ["body"], "msg": "bad", "input": body})
    return web.json_response({"detail": detail}, status=422)  # json.dumps: \\uXXXX escapes


async def text_400(request: web.Request) -> web.StreamResponse:
    """A hand-written 400: the raw (percent-encoded) query string and the key in the text and the code."""
    key = request.headers.get("X-API-Key", "")
    raw_query = request.raw_path.partition("?")[2]
    return web.json_response(
        {"detail": f"bad query {raw_query}; key {key!r} not allowed", "code": f"bad-key:{key}"}, status=400
    )


async def body_500(request: web.Request) -> web.StreamResponse:
    """A 500 whose detail is the request body as it arrived (JSON text, escapes and all)."""
    return web.json_response({"detail": f"crashed on {(await request.read()).decode()}"}, status=500)


async def auth_401(request: web.Request) -> web.StreamResponse:
    """A 401 naming the key it refused."""
    return web.json_response({"detail": f"unknown key {request.headers.get('X-API-Key')}"}, status=401)


async def redirect_302(request: web.Request) -> web.StreamResponse:
    """A redirect that carries the key in its query."""
    quoted = urllib.parse.quote(request.headers.get("X-API-Key", ""), safe="")
    return web.Response(status=302, headers={"Location": f"/elsewhere?api_key={quoted}&x=1"})


def exits(error: ClientError) -> list[str]:
    """Every way an error's text leaves it: message, repr, detail, code, location, context, args."""
    return [
        str(error),
        repr(error),
        str(error.detail),
        str(error.code),
        str(error.location),
        orjson.dumps(error.context()).decode(),
        repr(error.args),
    ]


def assert_hidden(marker: str, texts: list[str]) -> None:
    for text in texts:
        assert marker not in text, text


async def test_a_fastapi_style_422_echoing_header_param_and_body(
    make_client, upstream: Upstream, key
) -> None:
    """The key echoed as a 422's ``input`` (header, innocuous query param, body) is in no exit of the error."""
    secret, marker = key
    upstream.route("*", fastapi_422)
    client = make_client(upstream.base_url, api_key=secret)
    with pytest.raises(ClientValidationError) as info:
        await client.post("items", params={"q": secret}, json={"note": secret, "n": 1})
    assert upstream.requests[0].headers["X-API-Key"] == secret  # it did go out, and came back
    assert_hidden(marker, exits(info.value))
    detail = orjson.loads(info.value.detail or "")
    assert [d["input"] for d in detail[:2]] == [REDACTED, REDACTED]  # the rest of the detail is kept
    assert detail[2]["input"] == {"note": REDACTED, "n": 1}


async def test_a_400_echoing_the_percent_encoded_query_and_the_key(
    make_client, upstream: Upstream, key
) -> None:
    """A detail with the raw query string (percent-encoded key) and a code with the key: both masked."""
    secret, marker = key
    upstream.route("*", text_400)
    client = make_client(upstream.base_url, api_key=secret)
    with pytest.raises(ClientValidationError) as info:
        await client.get("search", params={"page": 2, "q": secret})
    assert_hidden(marker, exits(info.value))
    assert "page=2" in (info.value.detail or "")
    assert info.value.code is not None
    assert info.value.code.startswith("bad-key:")


async def test_a_500_echoing_the_json_body(make_client, upstream: Upstream, key) -> None:
    """A detail with the JSON request body as text (the key JSON-escaped): masked."""
    secret, marker = key
    upstream.route("*", body_500)
    client = make_client(upstream.base_url, api_key=secret, max_retries=0)
    with pytest.raises(ServerError) as info:
        await client.post("run", json={"echo": secret, "deep": [{"again": secret}]})
    assert_hidden(marker, exits(info.value))
    assert "crashed on" in (info.value.detail or "")


async def test_a_401_naming_the_key(make_client, upstream: Upstream, key) -> None:
    """A credentials error whose detail names the refused key: masked."""
    secret, marker = key
    upstream.route("*", auth_401)
    client = make_client(upstream.base_url, api_key=secret)
    with pytest.raises(ClientAuthenticationError) as info:
        await client.get("me")
    assert_hidden(marker, exits(info.value))


async def test_a_redirect_carrying_the_key(make_client, upstream: Upstream, key) -> None:
    """A 3xx (not followed) whose Location carries the key: the error's location is masked, the rest kept."""
    secret, marker = key
    upstream.route("*", redirect_302)
    client = make_client(upstream.base_url, api_key=secret)
    with pytest.raises(ClientResponseError) as info:
        await client.get("moved")
    assert_hidden(marker, exits(info.value))
    assert info.value.location is not None
    assert info.value.location.startswith("/elsewhere?api_key=")
    assert info.value.location.endswith("&x=1")


async def test_retries_exhausted_on_echoing_503s(make_client, upstream: Upstream, key) -> None:
    """Every attempt's 503 echoed the key: the RetryExhausted error shows it nowhere."""
    secret, marker = key

    async def echo_503(request: web.Request) -> web.StreamResponse:
        return web.json_response({"detail": f"overloaded {secret}", "code": secret}, status=503)

    upstream.route("*", echo_503)
    client = make_client(upstream.base_url, api_key=secret, max_retries=2)
    with pytest.raises(ServerError) as info:
        await client.get("busy")
    assert info.value.attempts == 3
    assert_hidden(marker, exits(info.value))


async def test_call_and_attempt_logs_hold_the_key_in_no_form(
    make_client, upstream: Upstream, key, caplog
) -> None:
    """The key under an innocuous param name is masked in the DEBUG record itself; no log line shows it."""
    secret, marker = key
    caplog.set_level(logging.DEBUG, logger="app.clients")
    upstream.route("*", fastapi_422)
    client = make_client(upstream.base_url, api_key=secret, log_request_body=True)
    with pytest.raises(ClientValidationError):
        await client.post("items", params={"q": secret, "page": "3"}, json={"comment": secret})
    records = [r for r in caplog.records if r.name == "app.clients"]
    (attempt,) = [r for r in records if r.levelno == logging.DEBUG]
    assert attempt.fields["params"] == {"q": REDACTED, "page": "3"}  # type: ignore[attr-defined]
    lines = [JsonFormatter().format(r) for r in records]
    assert len(lines) == 2
    assert_hidden(marker, lines)


def test_an_error_built_anywhere_is_scrubbed() -> None:
    """Built by hand with the key in message, detail, code and location: scrubbed at every exit."""
    secret, marker = KEYS["base64"]
    register_secret(secret)
    error = ServerError(
        f"boom {secret}", service_name="svc", detail=f"d {secret}", code=secret, location=f"/x?k={secret}"
    )
    assert_hidden(marker, exits(error))
    wrapped = retry_exhausted(error)
    assert_hidden(marker, exits(wrapped))


def test_text_set_after_construction_and_a_secret_registered_late_are_scrubbed() -> None:
    """A detail assigned later, and a secret registered after the error was built, are masked on the way out."""
    late, marker = "sk-registered-late-MarkerAbCdEf0123", "MarkerAbCdEf0123"
    error = ServerError(f"saw {late}", detail=f"detail {late}", service_name="svc")
    error.code = "c"
    register_secret(late)
    error.location = f"/l?{late}"
    assert_hidden(marker, exits(error))


def test_a_detail_cut_through_the_key_keeps_none_of_it() -> None:
    """A detail cut to a length in the middle of the key (upstream or client limit) shows none of its beginning."""
    secret = "sk-cut-detail-MarkerCut99887766"
    register_secret(secret)
    for cut in (18, 22, len(secret) - 1):
        detail = ("x" * 980 + secret)[: 980 + cut]
        error = ClientValidationError("HTTP 422", detail=detail)
        assert error.detail == "x" * 980 + REDACTED
        assert "sk-cut-detail" not in str(error.detail)


async def test_a_three_character_key_echoed_is_masked_as_a_token(make_client, upstream: Upstream) -> None:
    """A key under 4 characters is masked where it stands alone (the echoed ``input``), not inside other words."""
    upstream.route("*", fastapi_422)
    client = make_client(upstream.base_url, api_key="k9z")
    with pytest.raises(ClientValidationError) as info:
        await client.get("items", params={"q": "k9z", "other": "k9zebra"})
    detail = orjson.loads(info.value.detail or "")
    assert [d["input"] for d in detail] == [REDACTED, REDACTED, "k9zebra"]


# -- through the gateway ----------------------------------------------------------------


@pytest.fixture
def gateway(monkeypatch, upstream: Upstream, key, transport: str) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    gateway_on(monkeypatch, transport)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__API_KEY", key[0])
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__MAX_RETRIES", "0")
    container = Container()
    container.settings.override(load_settings())
    return container


@pytest.mark.parametrize(
    ("handler", "status"),
    [(fastapi_422, 422), (text_400, 422), (body_500, 503), (auth_401, 502), (redirect_302, 502)],
    ids=["fastapi-422", "text-400", "body-500", "auth-401", "redirect-302"],
)
async def test_the_gateway_never_answers_its_caller_with_the_key(
    gateway, upstream: Upstream, key, handler, status
) -> None:
    """Whatever the upstream echoes, the gateway's answer (body and headers) holds no form of the key."""
    secret, marker = key
    upstream.route("market-regime/EURUSD", handler)
    async with (
        serve(create_app(gateway)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/regime/EURUSD") as resp,
    ):
        text = await resp.text()
        headers = dict(resp.headers)
    assert upstream.requests[0].headers["X-API-Key"] == secret
    assert resp.status == status
    assert marker not in text
    assert_hidden(marker, list(headers.values()))
    body = orjson.loads(text)
    assert body["service"] == "analysis-engine-service"  # the answer is still the useful one


async def test_a_wrong_shaped_answer_echoing_the_key_gives_a_clean_502(
    gateway, upstream: Upstream, key
) -> None:
    """A 200 of the wrong shape with the key in its fields: the 502 naming the fields does not show it."""
    _, marker = key

    async def wrong_shape(request: web.Request) -> web.StreamResponse:
        key_seen = request.headers.get("X-API-Key")
        return web.json_response(
            {"symbol": key_seen, "timeframe": 1, "regime": key_seen, "confidence": key_seen}
        )

    upstream.route("market-regime/EURUSD", wrong_shape)
    async with (
        serve(create_app(gateway)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/regime/EURUSD") as resp,
    ):
        text = await resp.text()
    assert resp.status == 502
    assert marker not in text
