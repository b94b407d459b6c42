"""A real OAuth2 token endpoint on 127.0.0.1 (client credentials grant) that counts, records and misbehaves on request."""

from __future__ import annotations

import asyncio
import base64
import secrets
import urllib.parse
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.upstream import Handler

#: Every secret the tests hunt for carries a marker no encoder changes.
CLIENT_ID = "gateway-client"
CLIENT_SECRET = "cs-Marker4b9e2d7f1a"


@dataclass
class TokenRequest:
    """One request the endpoint received: its form fields and how the client authenticated."""

    form: dict[str, str]
    authorization: str | None
    #: ``client_secret_basic`` or ``client_secret_post``, by what the request carried.
    method: str | None = None
    basic: tuple[str, str] | None = field(default=None, repr=False)


class TokenServer:
    """``POST /token``: issues opaque tokens (``expires_in`` as set) to the one client it knows.

    Scripted by the test: ``gate`` (an event every request waits for: a slow endpoint),
    ``fail_status`` (answer every request with it), ``fail_next`` (only that many requests
    get ``fail_status``, then it heals). ``requests`` records each request's form;
    ``revoke()`` makes the tokens issued so far invalid for ``protect``-ed upstream routes.
    """

    def __init__(
        self, *, expires_in: float | None = 60, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.gate: asyncio.Event | None = None
        self.fail_status: int | None = None
        self.fail_next: int | None = None
        self.requests: list[TokenRequest] = []
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/oauth/token"))

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        await self.server.close()

    def revoke(self) -> None:
        """Every token issued so far is refused from now on."""
        self.revoked.update(self.issued)

    def valid(self, authorization: str | None) -> bool:
        """True for ``Bearer <token>`` with a token this server issued and did not revoke."""
        if authorization is None or not authorization.startswith("Bearer "):
            return False
        token = authorization.removeprefix("Bearer ")
        return token in self.issued and token not in self.revoked

    def protect(self, handler: Handler) -> Handler:
        """An upstream route that answers 401 unless the call carries a valid token of this server."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.valid(request.headers.get("Authorization")):
                return web.json_response({"detail": "invalid token", "code": "unauthorized"}, status=401)
            return await handler(request)

        return guarded

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        seen = TokenRequest(form, request.headers.get("Authorization"))
        self.requests.append(seen)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_status is not None and (self.fail_next is None or self.fail_next > 0):
                if self.fail_next is not None:
                    self.fail_next -= 1
                return web.json_response(
                    {"error": "temporarily_unavailable", "error_description": "try later"},
                    status=self.fail_status,
                )
            if form.get("grant_type") != "client_credentials":
                return web.json_response({"error": "unsupported_grant_type"}, status=400)
            if not self._authenticated(seen):
                return web.json_response({"error": "invalid_client"}, status=401)
            token = "at-" + secrets.token_urlsafe(24)
            self.issued.append(token)
            body: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return web.json_response(body)
        finally:
            self.in_flight -= 1

    def _authenticated(self, seen: TokenRequest) -> bool:
        header = seen.authorization
        if header is not None and header.startswith("Basic "):
            raw = base64.b64decode(header.removeprefix("Basic ")).decode()
            user, _, password = raw.partition(":")
            seen.method = "client_secret_basic"
            seen.basic = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
            if "client_secret" in seen.form:
                return False  # RFC 6749 §2.3: one method per request
            return seen.basic == (self.client_id, self.client_secret)
        seen.method = "client_secret_post"
        return (seen.form.get("client_id"), seen.form.get("client_secret")) == (
            self.client_id,
            self.client_secret,
        )
