"""One JSON record per call at INFO, attempts at DEBUG, and no secret in any of them."""

from __future__ import annotations

import logging

import orjson
import pytest

from app.clients import ServerError
from app.observability.logging import JsonFormatter
from tests.support.upstream import Upstream, json, sequence

API_KEY = "sk-live-7f3a9c2e51d04b88"
SECRETS = [API_KEY, "tok-in-params-991", "hunter2-pass", "bearer-abc-777", "cookie-val-555"]


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.DEBUG, logger="app.clients")
    return caplog


def formatted(caplog) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(r) for r in caplog.records if r.name == "app.clients"]


async def test_one_info_record_per_logical_call(make_client, upstream: Upstream, records) -> None:
    """A call with retries logs one INFO record with every field, and one DEBUG per attempt."""
    upstream.route("items/7", sequence(json({}, status=503), json({"id": 7})))
    client = make_client(upstream.base_url, max_retries=2)
    await client.get("items/{id}", path_params={"id": 7})
    info = [r for r in records.records if r.levelno == logging.INFO]
    debug = [r for r in records.records if r.levelno == logging.DEBUG]
    assert len(info) == 1
    assert len(debug) == 2
    line = orjson.loads(JsonFormatter().format(info[0]))
    assert line["peer.service"] == "test-upstream"
    assert "service" not in line  # the old name is gone
    assert line["method"] == "GET"
    assert line["endpoint"] == "items/{id}"
    assert line["status"] == 200
    assert line["attempts"] == 2
    assert line["outcome"] == "success"
    assert line["error"] is None
    assert line["duration_ms"] > 0
    assert line["request_id"] == upstream.requests[0].headers["X-Request-ID"]


async def test_failed_call_record_names_the_error(make_client, upstream: Upstream, records) -> None:
    """A failed call's record carries the outcome and the error class."""
    upstream.route("x", json({}, status=500))
    client = make_client(upstream.base_url)
    with pytest.raises(ServerError):
        await client.get("x")
    (info,) = [r for r in records.records if r.levelno == logging.INFO]
    line = orjson.loads(JsonFormatter().format(info))
    assert (line["outcome"], line["error"], line["status"]) == ("server_error", "ServerError", 500)


async def test_logging_switch(make_client, upstream: Upstream, records) -> None:
    """``enable_request_logging=False`` silences the per-call record."""
    upstream.route("x", json({}))
    client = make_client(upstream.base_url, enable_request_logging=False)
    await client.get("x")
    assert not [r for r in records.records if r.levelno == logging.INFO]


async def test_secrets_never_reach_a_log_record(make_client, upstream: Upstream, records) -> None:
    """The key, Authorization, cookies, secret params and JSON keys are redacted at every level."""
    upstream.route("*", json({"token": "bearer-abc-777", "nested": {"password": "hunter2-pass"}}))
    client = make_client(upstream.base_url, api_key=API_KEY, log_request_body=True, log_response_body=True)
    await client.post(
        "login",
        params={"access_token": "tok-in-params-991", "page": 2},
        json={
            "user": "ann",
            "password": "hunter2-pass",
            "api_key": API_KEY,
            "echo": f"key={API_KEY}",
        },
        headers={"Authorization": "Bearer bearer-abc-777", "Cookie": "sid=cookie-val-555"},
    )
    upstream.route("*", json({"detail": f"bad key {API_KEY}"}, status=500))
    with pytest.raises(ServerError):
        await client.get("again", params={"secret": "tok-in-params-991"})
    lines = formatted(records)
    assert len(lines) >= 4
    for line in lines:
        for secret in SECRETS:
            assert secret not in line, (secret, line)
    text = "\n".join(lines)
    assert '"page":2' in text  # ordinary params are still logged at DEBUG
    bodies = [orjson.loads(line).get("request_body") for line in lines]
    logged = orjson.loads(next(b for b in bodies if b))
    assert logged["user"] == "ann"  # the body was logged, with only the secrets removed
    assert logged["password"] == "***"
    assert upstream.requests[0].headers["X-API-Key"] == API_KEY  # redaction is for logs only


async def test_bodies_are_truncated(make_client, upstream: Upstream, records) -> None:
    """Logged bodies stop at 2 KiB."""
    upstream.route("*", json({"blob": "x" * 10_000}))
    client = make_client(upstream.base_url, log_response_body=True)
    await client.get("blob")
    (info,) = [r for r in records.records if r.levelno == logging.INFO]
    body = orjson.loads(JsonFormatter().format(info))["response_body"]
    assert len(body) < 2100
    assert body.endswith("more]")


async def test_error_messages_hold_no_secret(make_client, upstream: Upstream) -> None:
    """str(error) names service, method and template, never the key or the filled URL."""
    upstream.route("*", json({"detail": API_KEY}, status=401))
    client = make_client(upstream.base_url, api_key=API_KEY)
    with pytest.raises(Exception) as info:  # noqa: PT011 - the class is checked below
        await client.get("users/{name}", path_params={"name": "secret-user"})
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value)
    assert "secret-user" not in str(info.value)
    assert API_KEY not in repr(client.config)
