"""Encoding a call once: headers, query and JSON body, or a reason it cannot be sent that names no value."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from yarl import URL

from app.clients import ClientConfig
from app.clients.outbound import UnsendableError, client_headers, encode_request
from app.redaction import scrub

BASE = {"Accept": "application/json"}
URL_ = URL("http://up.test/api/r")


def _encode(**kw):
    args = {"params": None, "json": None, "headers": None, "idempotency_key": None, **kw}
    return encode_request(
        BASE, "rid", URL_, args["params"], args["json"], args["headers"], args["idempotency_key"]
    )


def test_a_plain_call_sends_the_client_headers_and_its_id() -> None:
    """No options: the client's headers plus X-Request-ID, no body, the URL as given (a copy of the headers)."""
    url, headers, body = _encode()
    assert (url, body) == (URL_, None)
    assert headers == {**BASE, "X-Request-ID": "rid"}
    assert headers is not BASE


def test_options_are_encoded_once() -> None:
    """JSON becomes bytes with its content type; the query joins the URL; per-call headers and the key are added."""
    url, headers, body = _encode(
        json={"a": [1, 2]}, params={"q": "x y", "n": [1, 2]}, headers={"X-Tenant": "t"}, idempotency_key="k"
    )
    assert body == b'{"a":[1,2]}'
    assert headers["Content-Type"] == "application/json"
    assert (headers["X-Tenant"], headers["Idempotency-Key"]) == ("t", "k")
    assert (url.query["q"], url.query.getall("n")) == ("x y", ["1", "2"])


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "CR, LF"),
        ({"headers": {"Bad Name": "v"}}, "not a valid HTTP token"),
        ({"headers": {"X-A": 1}}, "int value"),
        ({"idempotency_key": "k\n"}, "'Idempotency-Key' holds CR"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "'Transfer-Encoding' frames the body"),
        ({"headers": {"content-length": "0"}}, "'content-length' frames the body"),
        ({"params": {"q": object()}}, "has a object value"),
        ({"params": {"q": float("nan")}}, "not a finite number"),
        ({"params": {"q": "\ud800"}}, "lone surrogate"),
        ({"params": ["q"]}, "must be a mapping"),
    ],
)
def test_what_cannot_be_sent_is_refused_by_name(options, why) -> None:
    """Each unsendable option gives UnsendableError saying why, without repeating the value."""
    with pytest.raises(UnsendableError) as info:
        _encode(**options)
    assert why in str(info.value)
    assert "Injected" not in str(info.value)


def test_a_callers_header_replaces_the_clients_whatever_its_case() -> None:
    """On the client's own headers (a CIMultiDict, as aiohttp takes it): one Accept, the caller's; the base untouched."""
    config = ClientConfig(
        base_url="http://up.test/api", api_key=SecretStr("k-outbound-123456"), api_key_header="X-Key"
    )
    base = client_headers(config)
    _, headers, _ = encode_request(
        base, "rid", URL_, None, None, {"accept": "text/plain", "x-key": "k-other-654321"}, "idem"
    )
    assert headers.getall("Accept") == ["text/plain"]
    assert headers.getall("X-Key") == ["k-other-654321"]
    assert (headers["x-request-id"], headers["IDEMPOTENCY-KEY"]) == ("rid", "idem")
    assert base.getall("Accept") == ["application/json"]  # every call copies
    assert "X-Request-ID" not in base


def test_unencodable_json_keeps_the_encoder_error_as_cause() -> None:
    """An int past 64 bits cannot be JSON here: refused, with orjson's error as the cause."""
    with pytest.raises(UnsendableError, match="cannot be encoded as JSON") as info:
        _encode(json={"n": 2**70})
    assert isinstance(info.value.__cause__, TypeError)


def test_client_headers_carry_the_api_key_as_a_secret() -> None:
    """The configured key goes under its header, and is registered so logs redact it."""
    config = ClientConfig(
        base_url="http://up.test/api", api_key=SecretStr("k-outbound-123456"), api_key_header="X-Key"
    )
    headers = client_headers(config)
    assert headers["X-Key"] == "k-outbound-123456"
    assert "gzip" in headers["Accept-Encoding"]
    assert "k-outbound-123456" not in scrub("sent k-outbound-123456 upstream")
