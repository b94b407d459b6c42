"""Reading a token endpoint's answer, and keeping tokens masked only while they may show up."""

from __future__ import annotations

import orjson
import pytest

from app.auth import Token, parse_token
from app.auth.token import MAX_LIFETIME
from app.redaction import contains_secret, forget_secret, register_secret, register_temporary_secret, scrub


def _answer(**fields: object) -> bytes:
    return orjson.dumps({"access_token": "at-Marker3f2e1d", "token_type": "Bearer", **fields})


def test_a_token_and_its_expiry() -> None:
    """expires_in counts from when the request was sent; the value is the Authorization header's."""
    token = parse_token(_answer(expires_in=120), 1000.0, 300.0)
    assert token.value == "Bearer at-Marker3f2e1d"
    assert (token.expires_at, token.lifetime, token.issued_at) == (1120.0, 120.0, 1000.0)
    assert "Marker3f2e1d" not in repr(token)
    assert contains_secret("at-Marker3f2e1d")
    forget_secret(token.secret)


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [(None, 300.0), ("3600", 3600.0), (" 60 ", 60.0), (0.5, 0.5), (10**12, MAX_LIFETIME)],
)
def test_lifetimes(expires_in, lifetime) -> None:
    """No expires_in: the default; digits as text are taken; a huge one is capped."""
    fields = {} if expires_in is None else {"expires_in": expires_in}
    token = parse_token(_answer(**fields), 0.0, 300.0)
    assert token.lifetime == lifetime
    forget_secret(token.secret)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>", "not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps({"token_type": "Bearer"}), "no access_token"),
        (_answer(token_type="mac"), "not Bearer"),
        (_answer(expires_in=-5), "expires_in"),
        (_answer(expires_in=True), "expires_in"),
        (_answer(expires_in="soon"), "expires_in"),
        (orjson.dumps({"access_token": "two words-Marker3f2e1d"}), "visible ASCII"),
    ],
)
def test_unusable_answers_say_why_without_the_token(body, reason) -> None:
    """Each refusal names what is wrong, never the token, and a token read but refused is not kept."""
    with pytest.raises(ValueError, match=reason) as info:
        parse_token(body, 0.0, 300.0)
    assert "Marker3f2e1d" not in str(info.value)
    assert not contains_secret("at-Marker3f2e1d two words-Marker3f2e1d")


def test_a_token_type_in_any_case_is_bearer() -> None:
    """RFC 6749 §5.1: token_type is case-insensitive."""
    token = parse_token(_answer(token_type="bearer"), 0.0, 300.0)
    assert isinstance(token, Token)
    forget_secret(token.secret)


def test_temporary_secrets_are_counted_and_forgotten() -> None:
    """Two holders of one token: masked until both forgot it; a secret registered for good is never forgotten."""
    register_temporary_secret("at-Shared-Marker11aa")
    register_temporary_secret("at-Shared-Marker11aa")
    forget_secret("at-Shared-Marker11aa")
    assert scrub("x at-Shared-Marker11aa") == "x ***"
    forget_secret("at-Shared-Marker11aa")
    assert scrub("x at-Shared-Marker11aa") == "x at-Shared-Marker11aa"
    forget_secret("at-Shared-Marker11aa")  # once too often: harmless
    register_secret("k-Forever-Marker22bb")
    register_temporary_secret("k-Forever-Marker22bb")
    forget_secret("k-Forever-Marker22bb")
    assert scrub("k-Forever-Marker22bb") == "***"
