"""Redaction: secret-looking keys and registered secret values, in any encoding, never survive into text."""

from __future__ import annotations

import json
import re
import urllib.parse

import orjson
import pytest
from yarl import URL

from app import redaction
from app.redaction import (
    REDACTED,
    contains_secret,
    is_secret_key,
    redact,
    register_secret,
    scrub,
    scrub_cut,
    scrub_deep,
    truncate,
)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test registers into an empty registry, and the process's is restored after."""
    monkeypatch.setattr(redaction, "_known", {})
    monkeypatch.setattr(redaction, "_secrets", ())
    monkeypatch.setattr(redaction, "_heads", None)
    monkeypatch.setattr(redaction, "_longest", 0)


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "X-API-Key",
        "Authorization",
        "access_token",
        "password",
        "db_passwd",
        "Cookie",
        "client_secret",
        "client_assertion",  # RFC 7523: a signed JWT standing for the client secret
    ],
)
def test_secret_looking_keys(key) -> None:
    """Keys that name credentials are recognised, whatever their case."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["symbol", "timeframe", "limit", "page"])
def test_ordinary_keys(key) -> None:
    """Ordinary keys are left alone."""
    assert not is_secret_key(key)


def test_redact_walks_nested_json() -> None:
    """Nested dicts and lists are redacted by key; other values are kept."""
    data = {"user": "ann", "auth": {"token": "t-1", "scopes": ["a"]}, "items": [{"password": "p", "n": 1}]}
    assert redact(data) == {"user": "ann", "auth": REDACTED, "items": [{"password": REDACTED, "n": 1}]}


def test_redact_also_scrubs_values_by_value() -> None:
    """A registered secret under an innocuous key is masked by ``redact`` too."""
    register_secret("sk-unit-innocuous-0042")
    assert redact({"q": "sk-unit-innocuous-0042", "list": ["x sk-unit-innocuous-0042"]}) == {
        "q": REDACTED,
        "list": [f"x {REDACTED}"],
    }


def test_registered_secrets_are_scrubbed_from_any_text() -> None:
    """A registered value is removed wherever it appears, longest first."""
    register_secret("sk-unit-test-abcdef")
    register_secret("sk-unit-test-abcdef-longer")
    assert scrub("key=sk-unit-test-abcdef-longer and sk-unit-test-abcdef") == f"key={REDACTED} and {REDACTED}"
    assert redact({"note": "sent sk-unit-test-abcdef"}) == {"note": f"sent {REDACTED}"}


def test_empty_values_are_not_registered() -> None:
    """None and "" register nothing, and registering twice keeps one entry."""
    register_secret(None)
    register_secret("")
    register_secret("sk-twice-registered")
    register_secret("sk-twice-registered")
    assert len(redaction._secrets) == 1


# A key with every character an encoder treats specially: "/", '"', "+", a space, a
# backslash, a quote, non-ASCII inside and outside the BMP.
AWKWARD = "sk/9f\"Q+z w\\k'é€😀-end"


def _forms(secret: str) -> dict[str, str]:
    return {
        "raw": secret,
        "percent-upper": urllib.parse.quote(secret, safe=""),
        "percent-lower": re.sub(
            "%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(secret, safe="")
        ),
        "percent-keeps-slash": urllib.parse.quote(secret),
        "form-encoded": urllib.parse.quote_plus(secret),
        "yarl-query": URL("http://h/p").with_query({"q": secret}).raw_query_string,
        "json-orjson": orjson.dumps(secret).decode(),
        "json-ascii": json.dumps(secret),
        "json-escaped-slash": json.dumps(secret).replace("/", "\\/"),
        "json-in-json": json.dumps(json.dumps(secret)),
        "orjson-in-orjson": orjson.dumps(orjson.dumps(secret).decode()).decode(),
        "python-repr": repr(secret),
    }


@pytest.mark.parametrize("form", list(_forms(AWKWARD)))
def test_every_encoded_form_of_a_secret_is_masked(form) -> None:
    r"""Percent-encoded (either case, + for space), JSON-escaped (once, twice, \u, \/) or repr'd: masked."""
    register_secret(AWKWARD)
    text = f"upstream said: {_forms(AWKWARD)[form]} (rejected)"
    assert contains_secret(text)
    out = scrub(text)
    assert "9f" not in out  # no part of the key is left
    assert "-end" not in out
    assert out.startswith("upstream said: ")
    assert out.endswith(" (rejected)")
    assert REDACTED in out


@pytest.mark.parametrize("secret", ["key/with/slashes-123", 'quote"inside-123', "plus+sign+123=="])
def test_common_key_alphabets_are_masked_in_urls_and_json(secret) -> None:
    """Base64-style keys (/ + =) and keys with a quote are masked in a query string and in JSON."""
    register_secret(secret)
    url = str(URL("http://h/p").with_query({"innocuous": secret}))
    body = orjson.dumps({"detail": [{"input": secret}]}).decode()
    for text in (url, body, json.dumps(body)):
        assert not contains_secret(scrub(text)), text
        assert REDACTED in scrub(text)


def test_plain_text_without_the_secret_is_unchanged() -> None:
    """Text that holds only a fragment of a secret is returned as it was."""
    register_secret(AWKWARD)
    register_secret("sk-plain-0123456789")
    text = "sk/9f and sk-plain-01234 and end"
    assert not contains_secret(text)
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", REDACTED),
        ("key abc rejected", f"key {REDACTED} rejected"),
        ('{"input":"abc"}', f'{{"input":"{REDACTED}"}}'),
        ("x=abc&y=1", f"x={REDACTED}&y=1"),
        ("abcdef", "abcdef"),
        ("xabc", "xabc"),
        ("abc1", "abc1"),
    ],
)
def test_short_secrets_are_masked_as_whole_tokens_only(text, expected) -> None:
    """A secret under 4 characters is masked where it stands alone, never inside a longer word."""
    register_secret("abc")
    assert scrub(text) == expected


def test_a_short_secret_with_special_characters_is_masked_encoded_too() -> None:
    """A short secret's percent-encoded and JSON-escaped forms are masked as tokens."""
    register_secret('a/"')
    assert scrub("q=a%2F%22&x") == f"q={REDACTED}&x"
    assert scrub(json.dumps({"k": 'a/"'})) == f'{{"k": "{REDACTED}"}}'


def test_scrub_deep_keeps_json_valid_with_a_short_secret() -> None:
    """Scrubbing values, not the serialised line, never breaks the JSON: a secret "200" masks the number whole."""
    register_secret("200")
    data = {"status": 200, "note": "code 200 seen", "ok": True, "items": [200, 2000, None], "200": 1}
    out = scrub_deep(data)
    assert out == {
        "status": REDACTED,
        "note": f"code {REDACTED} seen",
        "ok": True,
        "items": [REDACTED, 2000, None],
        REDACTED: 1,
    }
    assert orjson.loads(orjson.dumps(out)) == out


def test_scrub_deep_masks_objects_whose_text_is_secret() -> None:
    """An object rendered with str() (as orjson's default=str would) is scrubbed; others are kept as they are."""
    register_secret("sk-object-text-7777")

    class Holder:
        def __str__(self) -> str:
            return "holder of sk-object-text-7777"

    kept = object()
    out = scrub_deep({"h": Holder(), "k": kept, "t": ("sk-object-text-7777",)})
    assert out["h"] == f"holder of {REDACTED}"
    assert out["k"] is kept
    assert out["t"] == [REDACTED]


@pytest.mark.parametrize("cut", [4, 10, 18])
def test_scrub_cut_masks_a_secret_cut_at_the_end(cut) -> None:
    """Text cut through a secret keeps none of its first characters."""
    secret = "sk-cut-through-0123"
    register_secret(secret)
    text = ("x" * 20 + " " + secret)[: 21 + cut]
    assert scrub_cut(text) == "x" * 20 + " " + REDACTED


def test_scrub_cut_leaves_short_or_unrelated_tails() -> None:
    """A tail that is not a secret's beginning, or under 4 characters of one, is kept."""
    register_secret("sk-cut-through-0123")
    assert scrub_cut("ends with sk-") == "ends with sk-"
    assert scrub_cut("ends with sk-x") == "ends with sk-x"
    assert scrub_cut("whole sk-cut-through-0123 here") == f"whole {REDACTED} here"


def test_truncate_marks_the_cut() -> None:
    """Long text is cut at the limit and says how much was dropped."""
    assert truncate("x" * 10, 4) == "xxxx…[6 more]"
    assert truncate("short", 10) == "short"
