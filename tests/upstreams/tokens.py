"""The token service's test clients, and helpers to ask it for tokens over HTTP."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus

from upstreams.auth.service import AuthSettings

GATEWAY_SECRET = "gw-Secret+/:with=odd&chars"
READER_ID = "reader svc:1"
READER_SECRET = "r\u00e9ader p@ss:w+rd/"
ISSUER = "https://auth.test"
CLIENTS: dict[str, Any] = {
    "gateway": {"secret": GATEWAY_SECRET, "audiences": ["analysis-engine", "ml-workbench"]},
    READER_ID: {
        "secret": READER_SECRET,
        "audiences": ["analysis-engine"],
        "scopes": ["prices:read", "regime:read"],
    },
}


def auth_settings(**overrides: Any) -> AuthSettings:
    """The test profile's token service, with both clients; ``overrides`` replace fields."""
    fields: dict[str, Any] = {"app_env": "test", "clients": CLIENTS, "issuer": ISSUER}
    fields.update(overrides)
    return AuthSettings(**fields)


def basic(client_id: str, secret: str) -> str:
    """``Authorization: Basic`` as RFC 6749 §2.3.1 has it: both parts form-urlencoded first."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def request_token(
    http: Any,
    auth: str,
    *,
    client_id: str = "gateway",
    secret: str = GATEWAY_SECRET,
    method: str = "basic",
    **params: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST /oauth/token (client credentials); status, headers and JSON body."""
    form = {"grant_type": "client_credentials", **params}
    headers = {}
    if method == "basic":
        headers["Authorization"] = basic(client_id, secret)
    else:
        form.update(client_id=client_id, client_secret=secret)
    async with http.post(f"{auth}/oauth/token", data=form, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def token_for(http: Any, auth: str, audience: str, **params: str) -> str:
    """A fresh access token for the gateway client and ``audience``."""
    status, _, body = await request_token(http, auth, audience=audience, **params)
    assert status == 200, body
    return str(body["access_token"])
