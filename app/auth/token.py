"""Token: one access token as the client sends it, and reading one from a token endpoint's answer."""

from __future__ import annotations

import dataclasses
import math
import re

import orjson

from app.redaction import forget_secret, register_temporary_secret

__all__ = ["MAX_LIFETIME", "Token", "parse_token"]

#: The longest lifetime taken at its word: a year. A larger ``expires_in`` is capped.
MAX_LIFETIME = 365 * 86_400.0
#: RFC 6750 §2.1 ``b64token`` and the opaque tokens servers issue: visible ASCII, no space.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_SECONDS = re.compile(r"[0-9]{1,12}")


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """An access token: the ``Authorization`` value it makes, and when it expires on the client's clock."""

    #: The raw access token, registered with the redaction registry while it is held.
    secret: str = dataclasses.field(repr=False)
    #: ``Bearer <token>``, built once.
    value: str = dataclasses.field(repr=False)
    expires_at: float
    lifetime: float

    @property
    def issued_at(self) -> float:
        """When the request that got it was sent (its lifetime counts from there, to be safe)."""
        return self.expires_at - self.lifetime


def parse_token(body: bytes, sent_at: float, default_lifetime: float) -> Token:
    """The token in a token endpoint's 200 answer (RFC 6749 §5.1), or ``ValueError`` saying what is wrong.

    The access token is registered as a (temporary) secret as soon as it is read; the
    reasons never show it. ``expires_in`` counts from ``sent_at``; without one, the
    lifetime is ``default_lifetime``.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")  # noqa: TRY004 - a bad answer, not a bad argument
    secret = data.get("access_token")
    if not isinstance(secret, str) or not secret:
        raise ValueError("no access_token")
    register_temporary_secret(secret)
    try:
        lifetime = _vetted(data, secret, default_lifetime)
    except ValueError:
        forget_secret(secret)  # never used, never sent
        raise
    return Token(secret, f"Bearer {secret}", sent_at + lifetime, lifetime)


def _vetted(data: dict[str, object], secret: str, default_lifetime: float) -> float:
    """The token's lifetime, once the token and its type are fit to send; ``ValueError`` if not."""
    if not _TOKEN.fullmatch(secret):
        raise ValueError("access_token is not a bearer token (visible ASCII, no spaces)")
    kind = data.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise ValueError("token_type is not Bearer")
    return _lifetime(data.get("expires_in"), default_lifetime)


def _lifetime(value: object, default: float) -> float:
    """``expires_in`` as seconds: a positive number (or digits, as some servers send it), capped."""
    if value is None:
        return default
    if isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        value = int(value.strip())
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError("expires_in is not a positive number of seconds")
    return min(float(value), MAX_LIFETIME)
