"""Hostile answers and unsendable requests: every one ends in a typed error, counted like any call.

Headers from a raw TCP server on 127.0.0.1 can be anything at all (non-UTF-8 bytes,
Arabic-Indic digits, a year 9999 date); none may escape as ValueError, OverflowError,
LookupError or UnicodeError, and each call still reaches the breaker, the metrics, the
call log and the rolling stats. Requests the client cannot send are refused before a
byte leaves, with RequestEncodeError.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.clients import (
    BaseServiceClient,
    ClientConfig,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    DataValidationError,
    RateLimitedError,
    RequestEncodeError,
    ResponseDecodeError,
    ServerError,
)
from app.clients.policies import ClientPolicies
from app.clients.urls import EndpointResolver
from app.observability.metrics import MetricFamilies
from app.resilience.retry import MAX_RETRY_AFTER, parse_retry_after
from tests.support import rawtcp
from tests.support.clock import FakeClock
from tests.support.upstream import Upstream, json, sequence

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

CAP = 5.0  # retry_max_delay of the clients below: the cap on every retry_after


class Recorder:
    """Clients whose metrics go to a private registry; reads back what each call left behind."""

    def __init__(self, caplog: pytest.LogCaptureFixture, transport: str) -> None:
        self.transport = transport
        self.registry = CollectorRegistry()
        self.families = MetricFamilies(self.registry)
        self.caplog = caplog
        self.clients: list[BaseServiceClient] = []

    def client(self, base_url: str, **overrides: Any) -> BaseServiceClient:
        clock = overrides.pop("clock", None)
        fields: dict[str, Any] = {
            "base_url": base_url,
            "service_name": "hostile",
            "timeout_seconds": 2.0,
            "max_retries": 0,
            "retry_base_delay": 0.001,
            "retry_max_delay": CAP,
            "retry_jitter": False,
            "circuit_breaker_failure_threshold": 100,
            "transport": self.transport,
        }
        fields.update(overrides)
        config = ClientConfig(**fields)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        policies = ClientPolicies.from_config(config, families=self.families, **extra)
        client = BaseServiceClient(config, policies=policies)
        self.clients.append(client)
        return client

    def outcomes(self) -> dict[str, float]:
        """``service_client_requests_total`` summed by outcome."""
        totals: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "service_client_requests_total":
                    outcome = sample.labels["outcome"]
                    totals[outcome] = totals.get(outcome, 0.0) + sample.value
        return totals

    def logged_outcomes(self) -> list[str]:
        return [
            r.fields["outcome"]  # type: ignore[attr-defined]
            for r in self.caplog.records
            if r.name == "app.clients" and r.levelno == logging.INFO and hasattr(r, "fields")
        ]

    def assert_counted(self, client: BaseServiceClient, outcome: str, *, breaker_failures: int) -> None:
        """One call, seen by metrics, the call log, the rolling stats and (or not) the breaker."""
        assert self.outcomes() == {outcome: 1.0}
        assert self.logged_outcomes() == [outcome]
        assert client.observer.stats.snapshot()["requests"] == 1
        assert client.breaker.fail_counter == breaker_failures


@pytest.fixture
async def recorder(caplog: pytest.LogCaptureFixture, transport: str) -> AsyncIterator[Recorder]:
    caplog.set_level(logging.INFO, logger="app.clients")
    rec = Recorder(caplog, transport)
    yield rec
    for client in rec.clients:
        await client.close()


def _head(status: int, *headers: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    head = b"HTTP/1.1 %d X\r\n" % status + b"\r\n".join((*headers, b"Content-Length: %d" % len(body)))
    return head, body


# -- Retry-After ---------------------------------------------------------------------------

RETRY_AFTER_VALUES = [
    pytest.param(b"3", 3.0, id="plain"),
    pytest.param(b"  4  ", 4.0, id="padded"),
    pytest.param(b"1.5", 1.5, id="decimal"),
    pytest.param(b"0", 0.0, id="zero"),
    pytest.param(b"9" * 400, CAP, id="400-digits"),
    pytest.param(b"99999999999999999", CAP, id="past-any-cap"),
    pytest.param("٣".encode(), None, id="arabic-indic-digit"),
    pytest.param("²".encode(), None, id="superscript-two"),
    pytest.param("\uff11\uff12".encode(), None, id="fullwidth-digits"),
    pytest.param(b"-5", None, id="negative"),
    pytest.param(b"1e400", None, id="float-overflow"),
    pytest.param(b"nan", None, id="nan"),
    pytest.param(b"inf", None, id="inf"),
    pytest.param(b"0x10", None, id="hex"),
    pytest.param(b"3, 4", None, id="list"),
    pytest.param(b"\xff\xfe\xfd", None, id="not-utf8"),
    pytest.param(b"Fri, 31 Dec 9999 23:59:59 GMT", CAP, id="year-9999"),
    pytest.param(b"Tue, 01 Jan 99999999999999999999 00:00:00 GMT", None, id="year-overflows-c-long"),
    pytest.param(b"Mon, 99 Feb 2020 99:99:99 GMT", None, id="impossible-date"),
    pytest.param(b"Wed, 21 Oct 2015 07:28:00 +9999", None, id="offset-over-a-day"),
    pytest.param(b"Wed, 21 Oct 2015 07:28:00", None, id="zoneless-date"),
    pytest.param(b"Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="past-date"),
    pytest.param(b"x" * 4000, None, id="long-garbage"),
]


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(("raw", "expected"), RETRY_AFTER_VALUES)
async def test_garbage_retry_after_is_ignored_or_capped(recorder, status, raw, expected) -> None:
    """Retry-After garbage is ignored, huge values are capped; the call is typed and counted."""
    head, body = _head(status, b"Content-Type: application/json", b"Retry-After: " + raw, body=b"{}")
    async with rawtcp.raw_server(rawtcp.respond(head, body)) as url:
        client = recorder.client(url)
        with pytest.raises(RateLimitedError if status == 429 else ServerError) as info:
            await client.get("x")
    after = info.value.retry_after
    assert after == expected
    assert after is None or (math.isfinite(after) and 0 <= after <= CAP)
    orjson.dumps(info.value.context())  # serialisable as the gateway would send it
    recorder.assert_counted(client, "rate_limited" if status == 429 else "server_error", breaker_failures=1)


@pytest.mark.parametrize(
    ("raw", "waits"),
    [
        pytest.param(b"9" * 400, [CAP], id="400-digits-capped"),
        pytest.param("²".encode(), [0.001], id="garbage-ignored-backoff"),
        pytest.param(b"Fri, 31 Dec 9999 23:59:59 GMT", [CAP], id="far-date-capped"),
        pytest.param(b"2", [2.0], id="honoured"),
    ],
)
async def test_retry_waits_stay_within_the_cap(recorder, raw, waits) -> None:
    """The retry after a hostile Retry-After waits the server's value, capped, or the backoff."""
    clock = FakeClock()
    first = _head(503, b"Retry-After: " + raw)
    second = _head(200, b"Content-Type: application/json", body=b'{"ok": 1}')
    answers = iter([first, second])

    async def behaviour(reader, writer) -> None:
        await rawtcp.respond(*next(answers))(reader, writer)

    async with rawtcp.raw_server(behaviour) as url:
        client = recorder.client(url, max_retries=1, clock=clock)
        assert await client.get("x") == {"ok": 1}
    assert clock.sleeps == waits


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("9" * 5000, MAX_RETRY_AFTER),  # past int()'s 4300-digit limit: no ValueError
        ("٣", None),
        ("²", None),
        ("1" + "0" * 20 + ".5", MAX_RETRY_AFTER),
        ("1." + "5" * 3000, 1.5555555555555556),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("Sat, 01 Jan 0001 00:00:00 +2359", 0.0),
        ("Fri, 31 Dec 9999 23:59:59 -2359", MAX_RETRY_AFTER),
    ],
)
def test_parse_retry_after_never_raises_and_stays_finite(value, expected) -> None:
    """parse_retry_after alone: garbage is None, anything else finite within the cap."""
    assert parse_retry_after(value, wall=lambda: 1_700_000_000.0) == expected


def test_parse_retry_after_takes_a_cap() -> None:
    """The cap applies to seconds and dates alike; a cap of inf still yields a finite value."""
    future = email.utils.formatdate(1_700_000_000.0 + 600, usegmt=True)
    assert parse_retry_after("600", cap=30.0) == 30.0
    assert parse_retry_after(future, wall=lambda: 1_700_000_000.0, cap=30.0) == 30.0
    assert parse_retry_after("9" * 30, cap=math.inf) == MAX_RETRY_AFTER
    assert parse_retry_after("12", cap=-1.0) == 0.0


# -- Content-Type, charset, status line and framing headers ---------------------------------

CONTENT_TYPES = [
    pytest.param(b"text/plain; charset=rot13", b"caf\xc3\xa9", "café", id="charset-not-a-text-codec"),
    pytest.param(b"text/plain; charset=no-such-charset", b"caf\xc3\xa9", "café", id="unknown-charset"),
    pytest.param(b"text/plain; charset=idna", b"caf\xc3\xa9", "café", id="charset-refusing-replace"),
    pytest.param(b"text/plain; charset=undefined", b"abc", "abc", id="charset-that-always-fails"),
    pytest.param(b"text/plain; charset=\xff\xfe", b"abc", "abc", id="charset-not-utf8"),
    pytest.param(b"text/plain; charset*=utf-8''%ff%fe", b"abc", "abc", id="charset-rfc2231-garbage"),
    pytest.param(b"text/plain; charset=" + b"x" * 3000, b"abc", "abc", id="charset-huge"),
    pytest.param(b"text/plain; charset=latin-1", b"caf\xe9", "café", id="charset-honoured"),
    pytest.param(b"text/plain", b"\xff\xfeok", "\ufffd\ufffdok", id="invalid-utf8-text"),
    pytest.param(b";;;;", b"abc", "abc", id="only-semicolons"),
    pytest.param(b"\xff/\xfe", b"abc", "abc", id="media-type-not-utf8"),
    pytest.param(b'"', b"abc", "abc", id="lone-quote"),
    pytest.param(b"application/json; charset=rot13", b'{"a": 1}', {"a": 1}, id="json-ignores-charset"),
    pytest.param(b"APPLICATION/JSON", b'{"a": 1}', {"a": 1}, id="json-uppercase"),
    pytest.param(b'application/vnd.x+json; q="', b'{"a": 1}', {"a": 1}, id="json-suffix-broken-param"),
]


@pytest.mark.parametrize(("content_type", "body", "expected"), CONTENT_TYPES)
async def test_garbage_content_type_or_charset_decodes_safely(recorder, content_type, body, expected) -> None:
    """A media type or charset that is garbage never raises LookupError or UnicodeError: text as UTF-8."""
    head, body = _head(200, b"Content-Type: " + content_type, body=body)
    async with rawtcp.raw_server(rawtcp.respond(head, body)) as url:
        client = recorder.client(url)
        assert await client.get("x") == expected
    recorder.assert_counted(client, "success", breaker_failures=0)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b"<html>"),
        (b"application/json", b'{"a": "\xff"}'),
        (b"application/json", b"[" * 5000),
        (b"application/problem+json; charset=\xff", b"{not json"),
    ],
)
async def test_a_body_that_is_not_its_json_is_a_decode_error(recorder, content_type, body) -> None:
    """Invalid JSON, invalid UTF-8 inside JSON or nesting too deep: ResponseDecodeError, type not echoed."""
    head, body = _head(200, b"Content-Type: " + content_type, body=body)
    async with rawtcp.raw_server(rawtcp.respond(head, body)) as url:
        client = recorder.client(url)
        with pytest.raises(ResponseDecodeError) as info:
            await client.get("x")
    assert "\ufffd" not in str(info.value)
    assert "problem" not in str(info.value)
    recorder.assert_counted(client, "decode_error", breaker_failures=0)


BROKEN_FRAMING = [
    pytest.param(b"Content-Length: abc", id="cl-letters"),
    pytest.param(b"Content-Length: -1", id="cl-negative"),
    pytest.param(b"Content-Length: 1e3", id="cl-float"),
    pytest.param("Content-Length: ٣".encode(), id="cl-arabic-indic"),
    pytest.param(b"Content-Length: 99999999999999999999999", id="cl-overflow"),
    pytest.param(b"Content-Length: 2, 2", id="cl-list"),
    pytest.param(b"Content-Length: 2\r\nContent-Length: 3", id="cl-twice"),
    pytest.param(b"Content-Length: +2", id="cl-plus"),
    pytest.param(b"Content-Length: 0x2", id="cl-hex"),
    pytest.param(b"Transfer-Encoding: chunked\r\nContent-Length: 2", id="te-and-cl"),
    pytest.param(b"X-Bad\x00: 1\r\nContent-Length: 2", id="nul-in-name"),
    pytest.param(b"Content-Type: text/plain; charset=utf-8\x00\r\nContent-Length: 2", id="nul-in-value"),
    pytest.param(b"no colon here\r\nContent-Length: 2", id="line-without-colon"),
    pytest.param(b"X-Long: " + b"a" * 9000 + b"\r\nContent-Length: 2", id="header-too-long"),
]


@pytest.mark.parametrize("headers", BROKEN_FRAMING)
async def test_unparseable_framing_headers_are_connection_errors(recorder, headers) -> None:
    """Garbage Content-Length, framing or header lines: aiohttp refuses the answer; a typed error."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + headers
    async with rawtcp.raw_server(rawtcp.respond(head, b"{}")) as url:
        client = recorder.client(url)
        with pytest.raises(ClientConnectionError) as info:
            await client.get("x")
    assert info.value.__cause__ is not None
    recorder.assert_counted(client, "connection_error", breaker_failures=1)


@pytest.mark.parametrize(
    ("status_line", "cls"),
    [
        (b"HTTP/1.1 099 X", ClientResponseError),
        (b"HTTP/1.1 101 Switching Protocols", ClientResponseError),
        (b"HTTP/1.1 abc X", ClientConnectionError),
        (b"HTTP/2 200 OK", ClientConnectionError),
        (b"HTTP/1.1 999 X", ClientResponseError),  # no such status class: not a 5xx either
    ],
)
async def test_odd_status_lines_are_typed(recorder, status_line, cls) -> None:
    """A final status outside 2xx-5xx, or a status line that is not HTTP/1.1: a typed error, never success."""
    head = status_line + b"\r\nContent-Type: application/json\r\nContent-Length: 2"
    async with rawtcp.raw_server(rawtcp.respond(head, b"{}")) as url:
        client = recorder.client(url)
        with pytest.raises(cls):
            await client.get("x")


@pytest.mark.parametrize(
    "location",
    [b"\xff\xfe/x", b"/" + b"a" * 7000, "/café".encode(), b"http://[::1"],
    ids=["not-utf8", "very-long", "utf8", "malformed"],
)
async def test_a_kept_location_is_text_and_bounded(recorder, location) -> None:
    """A 3xx's Location on the error is valid, bounded text whatever bytes came (JSON-safe)."""
    head, body = _head(302, b"Location: " + location)
    async with rawtcp.raw_server(rawtcp.respond(head, body)) as url:
        client = recorder.client(url)
        with pytest.raises(ClientResponseError) as info:
            await client.get("x")
    kept = info.value.location
    assert kept is not None
    assert len(kept) <= 2048
    orjson.dumps(kept)  # no lone surrogate
    recorder.assert_counted(client, "client_error", breaker_failures=0)


# -- redirects ------------------------------------------------------------------------------


def _redirect_to(location: str, status: int = 302):
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handler


REFUSED_REDIRECTS = [
    pytest.param("http://[::1", "malformed", id="bad-ipv6"),
    pytest.param("http://127.0.0.1:99999/api/v1/new", "malformed", id="port-out-of-range"),
    pytest.param("http://127.0.0.1:-1/api/v1/new", "malformed", id="negative-port"),
    pytest.param("{origin_userinfo}/api/v1/new", "credentials", id="userinfo-same-origin"),
    pytest.param("{origin_user}/api/v1/new", "credentials", id="user-only-same-origin"),
    pytest.param("/elsewhere", "outside", id="same-origin-other-path"),
    pytest.param("/api/v1/../admin", "outside", id="dot-dot-out"),
    pytest.param("/api/v1/%2e%2e/admin", "outside", id="encoded-dot-dot-out"),
    pytest.param("/api/v10/new", "outside", id="prefix-without-boundary"),
    pytest.param("/api/v1", "outside", id="prefix-without-slash"),
    pytest.param("https://{hostport}/api/v1/new", "cross-origin", id="scheme-change"),
    pytest.param("http://localhost:{port}/api/v1/new", "cross-origin", id="other-host-name"),
    pytest.param("//evil.example/api/v1/new", "cross-origin", id="scheme-relative"),
]


@pytest.mark.parametrize(("location", "why"), REFUSED_REDIRECTS)
async def test_refused_redirects(recorder, upstream: Upstream, location, why) -> None:
    """A followed redirect must stay on the base URL's origin and path, carry no credentials, parse."""
    base = upstream.server.make_url("")
    hostport = f"{base.host}:{base.port}"
    location = location.format(
        origin_userinfo=f"http://user:s3cret-pw@{hostport}",
        origin_user=f"http://user@{hostport}",
        hostport=hostport,
        port=base.port,
    )
    upstream.route("old", _redirect_to(location))
    upstream.route("*", json({"followed": True}))
    client = recorder.client(upstream.base_url, follow_redirects=True, api_key="sk-redirect-key")
    with pytest.raises(
        ClientResponseError, match=why if why != "outside" else "outside the base URL"
    ) as info:
        await client.get("old")
    assert info.value.status == 302
    assert "s3cret-pw" not in str(info.value.location)
    assert list(upstream.hits) == ["old"]  # nothing else was asked for
    recorder.assert_counted(client, "client_error", breaker_failures=0)


@pytest.mark.parametrize(
    ("location", "path", "query"),
    [
        ("new", "/api/v1/new", ""),
        ("/api/v1/new?x=1#frag", "/api/v1/new", "x=1"),
        ("./new", "/api/v1/new", ""),
        ("{origin}/api/v1/deeper/new", "/api/v1/deeper/new", ""),
    ],
)
async def test_redirects_under_the_base_url_are_followed(
    make_client, upstream, location, path, query
) -> None:
    """Relative, absolute-path and same-origin absolute Locations under the base path: followed."""
    location = location.format(origin=str(upstream.server.make_url("")).rstrip("/"))
    upstream.route("old", _redirect_to(location, 307))
    upstream.route("*", json({"followed": True}))
    client = make_client(upstream.base_url, follow_redirects=True)
    assert await client.get("old") == {"followed": True}
    last = upstream.requests[-1]
    assert (last.path, last.query_string) == (path, query)


async def test_a_redirect_loop_is_still_typed(make_client, upstream: Upstream) -> None:
    """A Location pointing at itself ends in ClientResponseError after the redirect limit."""
    upstream.route("loop", _redirect_to("loop"))
    client = make_client(upstream.base_url, follow_redirects=True)
    with pytest.raises(ClientResponseError, match="too many redirects"):
        await client.get("loop")
    assert upstream.hits["loop"] == 11


# -- requests that cannot be sent -----------------------------------------------------------

UNSENDABLE = [
    pytest.param({"json": {"n": 2**64}}, "JSON", id="int-past-64-bits"),
    pytest.param({"json": {"n": -(2**63) - 1}}, "JSON", id="int-below-64-bits"),
    pytest.param({"json": {"x": object()}}, "JSON", id="unknown-type"),
    pytest.param({"json": {1: "a"}}, "JSON", id="non-str-key"),
    pytest.param({"json": {"s": "\ud800"}}, "JSON", id="lone-surrogate"),
    pytest.param({"json": {1, 2}}, "JSON", id="a-set"),
    pytest.param({"headers": {"X-A": "a\r\nInjected: 1"}}, "CR, LF", id="crlf-value"),
    pytest.param({"headers": {"X-A": "a\nb"}}, "CR, LF", id="lf-value"),
    pytest.param({"headers": {"X-A": "a\rb"}}, "CR, LF", id="cr-value"),
    pytest.param({"headers": {"X-A": "a\x00b"}}, "CR, LF", id="nul-value"),
    pytest.param({"headers": {"X-A": "a\x7f"}}, "CR, LF", id="del-value"),
    pytest.param({"headers": {"X-A": "\udcff"}}, "CR, LF", id="surrogate-value"),
    pytest.param({"headers": {"X-A": 5}}, "not text", id="int-value"),
    pytest.param({"headers": {"Bad Name": "v"}}, "token", id="space-in-name"),
    pytest.param({"headers": {"X:A": "v"}}, "token", id="colon-in-name"),
    pytest.param({"headers": {"X-A\r\nInjected": "v"}}, "token", id="crlf-in-name"),
    pytest.param({"headers": {"": "v"}}, "token", id="empty-name"),
    pytest.param({"headers": {"X-É": "v"}}, "token", id="non-ascii-name"),
    pytest.param({"idempotency_key": "k\r\nX: 1"}, "CR, LF", id="crlf-idempotency-key"),
    pytest.param({"headers": {"Transfer-Encoding": "chunked"}, "json": {}}, "frames", id="caller-te"),
    pytest.param({"headers": {"Content-Length": "0"}, "json": {"a": 1}}, "frames", id="caller-cl"),
    pytest.param({"params": {"a": None}}, "NoneType", id="param-none"),
    pytest.param({"params": {"a": {"x": 1}}}, "dict", id="param-dict"),
    pytest.param({"params": {"a": True}}, "bool", id="param-bool"),
    pytest.param({"params": {"a": b"x"}}, "bytes", id="param-bytes"),
    pytest.param({"params": {"a": [1, None]}}, "NoneType", id="param-list-with-none"),
    pytest.param({"params": {"a": float("inf")}}, "finite", id="param-inf"),
    pytest.param({"params": {"a": float("nan")}}, "finite", id="param-nan"),
    pytest.param({"params": {1: "x"}}, "name", id="param-int-key"),
    pytest.param({"params": {"a": "\udcff"}}, "surrogate", id="param-surrogate"),
    pytest.param({"params": [("a", "1")]}, "mapping", id="params-not-a-mapping"),
]


@pytest.mark.parametrize(("options", "why"), UNSENDABLE)
async def test_unsendable_requests_are_refused_before_sending(
    recorder, upstream: Upstream, options, why
) -> None:
    """A body, header or query the client cannot send: RequestEncodeError; nothing sent, not retried."""
    upstream.route("*", json({}))
    client = recorder.client(upstream.base_url, max_retries=3)
    with pytest.raises(RequestEncodeError, match=why) as info:
        await client.post("orders", idempotent=True, fallback="never used", **options)
    error = info.value
    assert isinstance(error, DataValidationError)
    assert (error.attempts, error.status, error.endpoint, error.method) == (0, None, "orders", "POST")
    assert upstream.hits.total() == 0
    assert client.breaker.state_name == "closed"
    recorder.assert_counted(client, "invalid_request", breaker_failures=0)


async def test_sendable_edge_values_go_through(make_client, upstream: Upstream) -> None:
    """Tabs in header values, lists and big ints in params, 64-bit ints in JSON: sent as they are."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url)
    await client.post(
        "orders",
        json={"n": 2**63 - 1, "m": -(2**63), "u": 2**64 - 1},
        headers={"X-Tab": "a\tb", "X-Utf8": "café"},
        params={"a": [1, "x"], "big": 10**30, "f": 1.5, "é": "ü"},
    )
    request = upstream.requests[0]
    assert request.headers["X-Tab"] == "a\tb"
    assert request.query.getall("a") == ["1", "x"]
    assert request.query["big"] == str(10**30)
    assert request.query["é"] == "ü"
    assert orjson.loads(upstream.bodies[0]) == {"n": 2**63 - 1, "m": -(2**63), "u": 2**64 - 1}


# -- endpoint templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "params", "raw_path", "path"),
    [
        ("données", None, "/api/v1/donn%C3%A9es", "/api/v1/données"),
        ("日本/{x}", {"x": "東京"}, "/api/v1/%E6%97%A5%E6%9C%AC/%E6%9D%B1%E4%BA%AC", "/api/v1/日本/東京"),
        ("prix/€uro/{s}", {"s": "é/è"}, "/api/v1/prix/%E2%82%ACuro/%C3%A9%2F%C3%A8", None),
        ("caf%C3%A9", None, "/api/v1/caf%C3%A9", "/api/v1/café"),
        ("100%", None, "/api/v1/100%25", "/api/v1/100%"),
        ("a{b}c{", {"b": 1}, "/api/v1/a1c%7B", "/api/v1/a1c{"),
        ("emoji/😀", None, "/api/v1/emoji/%F0%9F%98%80", "/api/v1/emoji/😀"),
    ],
)
async def test_non_ascii_templates_are_percent_encoded(
    make_client, upstream, template, params, raw_path, path
) -> None:
    """Non-ASCII (and stray %, stray braces) in a template reach the upstream UTF-8 percent-encoded."""
    upstream.route("*", json({}))
    client = make_client(upstream.base_url)
    await client.get(template, path_params=params)
    request = upstream.requests[0]
    assert request.raw_path == raw_path
    if path is not None:
        assert request.path == path


@pytest.mark.parametrize(
    "template",
    ["a\x7fb", "x/\udcff", "a b", "..%2F", "données/../x"],
    ids=["del", "surrogate", "space", "dots", "dots-utf8"],
)
def test_templates_that_cannot_be_paths_are_refused(template) -> None:
    """DEL, lone surrogates, spaces and dot segments in a template: ValueError naming the endpoint."""
    with pytest.raises(ValueError, match="endpoint"):
        EndpointResolver("http://127.0.0.1:8001/api/v1/").resolve(template)


def test_a_path_param_with_a_lone_surrogate_is_refused() -> None:
    """A path parameter value that no encoding can send: ValueError, not UnicodeEncodeError."""
    with pytest.raises(ValueError, match="path parameter") as info:
        EndpointResolver("http://127.0.0.1:8001/api/v1/").resolve("x/{v}", {"v": "\udcff"})
    assert not isinstance(info.value, UnicodeError)


# -- the error stays an error the caller can handle ------------------------------------------


async def test_every_hostile_answer_in_a_row_keeps_the_breaker_counting(recorder) -> None:
    """Back to back hostile 503s (garbage Retry-After, charset, framing): all typed, all counted."""
    answers = [
        _head(503, "Retry-After: ²".encode(), b"Content-Type: application/json", body=b"{}"),
        _head(503, b"Retry-After: " + b"9" * 400, b"Content-Type: text/plain; charset=rot13", body=b"x"),
        _head(503, b"Retry-After: Fri, 31 Dec 99999 23:59:59 GMT", body=b""),
    ]
    queue = iter(answers)

    async def behaviour(reader, writer) -> None:
        await rawtcp.respond(*next(queue))(reader, writer)

    async with rawtcp.raw_server(behaviour) as url:
        client = recorder.client(url)
        for _ in answers:
            with pytest.raises(ServerError) as info:
                await client.get("x")
            assert isinstance(info.value, ClientError)
    assert client.breaker.fail_counter == 3
    assert recorder.outcomes() == {"server_error": 3.0}


async def test_a_sequence_of_answers_is_unaffected(make_client, upstream: Upstream) -> None:
    """After a hostile answer, the same client keeps serving good ones (nothing poisoned)."""
    upstream.route(
        "x",
        sequence(json({}, status=429, headers={"Retry-After": "٣"}), json({"ok": True})),
    )
    client = make_client(upstream.base_url, max_retries=0)
    with pytest.raises(RateLimitedError):
        await client.get("x")
    assert await client.get("x") == {"ok": True}
