"""The client-credentials grant's request: form, client authentication, audience and scope (RFC 6749)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "ClientSpec",
    "GRANT_TYPE",
    "Grant",
    "MAX_FORM_BYTES",
    "NO_STORE",
    "TokenError",
    "authenticate",
    "grant_audience",
    "grant_scope",
    "read_form",
    "token_request",
]

GRANT_TYPE = "client_credentials"

#: A token request is a handful of short fields; anything longer is refused unread.
MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CREDENTIAL_FIELDS = ("client_secret", "client_id", "client_assertion")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Compared against when the client id is unknown, so that a miss costs what a hit costs.
_NOBODY = hashlib.sha256(b"no such client").digest()


class ClientSpec(BaseModel):
    """One client allowed to ask for tokens: its secret, the audiences and the scopes it may get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr
    audiences: list[str] = Field(min_length=1)
    #: The scopes it may ask for, and gets when it asks for none; None: whatever it asks for.
    scopes: list[str] | None = None

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("a client secret cannot be empty")
        return value


@dataclass(frozen=True)
class Grant:
    """What a valid token request gets: its client, the audience and the scope."""

    client: str
    audience: str
    scope: str


class TokenError(Exception):
    """An RFC 6749 §5.2 error answer; ``client`` is the authenticated client, when there is one."""

    def __init__(self, error: str, description: str, status: int = 400, client: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.client = client

    def response(self, realm: str) -> JSONResponse:
        """The JSON error, uncacheable; a 401 names the Basic scheme (RFC 6749 §5.2)."""
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


async def token_request(request: Request, clients: Mapping[str, ClientSpec]) -> Grant:
    """The grant a client-credentials token request asks for, or the TokenError that refuses it."""
    if any(name in request.query_params for name in _CREDENTIAL_FIELDS):
        # RFC 6749 §2.3.1: credentials in the URI would end up in access logs and spans.
        raise TokenError("invalid_request", "client credentials belong in the body, not the URI")
    form = await read_form(request)
    client = authenticate(request.headers.get("authorization"), form, clients)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise TokenError("invalid_request", "grant_type is required", client=client)
    if grant_type != GRANT_TYPE:
        raise TokenError("unsupported_grant_type", f"only {GRANT_TYPE} is supported", client=client)
    spec = clients[client]
    return Grant(client, grant_audience(form, spec, client), grant_scope(form, spec, client))


async def read_form(request: Request) -> dict[str, str]:
    """The request's form fields; a field sent empty counts as absent, one sent twice is refused."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise TokenError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise TokenError("invalid_request", f"the body is longer than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise TokenError("invalid_request", "the body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise TokenError("invalid_request", f"{name} is given more than once")
        if value:  # RFC 6749 §3.2: "parameters sent without a value MUST be treated as if omitted"
            form[name] = value
    return form


def authenticate(
    authorization: str | None, form: Mapping[str, str], clients: Mapping[str, ClientSpec]
) -> str:
    """The client id, once its secret checks out (client_secret_basic or client_secret_post)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    basic = scheme.lower() == "basic"
    if authorization and not basic:
        raise TokenError("invalid_client", "client authentication must use the Basic scheme", 401)
    if basic and "client_secret" in form:
        raise TokenError("invalid_request", "use one client authentication method, not two")
    if basic:
        client_id, secret = _basic(credentials)
        if "client_id" in form and form["client_id"] != client_id:
            raise TokenError("invalid_request", "client_id differs from the authenticated client")
    elif "client_secret" in form and "client_id" in form:
        client_id, secret = form["client_id"], form["client_secret"]
    else:
        raise TokenError("invalid_client", "client authentication required", 401)
    spec = clients.get(client_id)
    expected = hashlib.sha256(spec.secret.get_secret_value().encode()).digest() if spec else _NOBODY
    # Digests of equal length: the comparison time says nothing of the secret, not even its length.
    matches = hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), expected)
    if spec is None or not matches:
        raise TokenError("invalid_client", "client authentication failed", 401)
    return client_id


def _basic(credentials: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise TokenError("invalid_client", "malformed Basic credentials", 401)
    # RFC 6749 §2.3.1: both are form-urlencoded before they are joined and base64-encoded.
    return unquote_plus(client_id), unquote_plus(secret)


def grant_audience(form: Mapping[str, str], spec: ClientSpec, client: str) -> str:
    """The audience asked for, if the client may have it; its only one when it asks for none."""
    asked = form.get("audience")
    if asked is None:
        if len(spec.audiences) == 1:
            return spec.audiences[0]
        raise TokenError("invalid_request", "audience is required: this client has several", client=client)
    if asked not in spec.audiences:
        # RFC 8707's error for a resource the client may not have a token for.
        raise TokenError("invalid_target", "audience not allowed for this client", client=client)
    return asked


def grant_scope(form: Mapping[str, str], spec: ClientSpec, client: str) -> str:
    """The scope granted, space-separated: what was asked for, within what the client may have."""
    asked = form.get("scope")
    tokens = asked.split(" ") if asked else []
    if not all(_SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise TokenError("invalid_scope", "malformed scope", client=client)
    tokens = list(dict.fromkeys(tokens))  # once each, in the order asked
    if spec.scopes is None:
        return " ".join(tokens)
    if not tokens:
        return " ".join(spec.scopes)
    if any(t not in spec.scopes for t in tokens):
        raise TokenError("invalid_scope", "scope not allowed for this client", client=client)
    return " ".join(tokens)
