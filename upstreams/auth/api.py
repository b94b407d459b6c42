"""The token service's routes: the token endpoint, its JWKS and its metadata (RFC 6749, 7517, 8414)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from upstreams.auth.grant import GRANT_TYPE, NO_STORE, ClientSpec, TokenError, token_request
from upstreams.auth.keys import ALGORITHM, Signer
from upstreams.auth.stats import TokenStats

__all__ = ["TOKEN_PATH", "oauth_router"]

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a password


def oauth_router(
    *,
    realm: str,
    issuer: str,
    ttl_seconds: int,
    clients: Mapping[str, ClientSpec],
    signer: Signer,
    stats: TokenStats,
) -> APIRouter:
    """The token endpoint, ``/.well-known/jwks.json`` and ``/.well-known/oauth-authorization-server``."""
    router = APIRouter(tags=["oauth"])

    @router.post(TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        try:
            grant = await token_request(request, clients)
        except TokenError as exc:
            stats.count(exc.client, issued=False)
            # The client id is named only once authenticated: an unknown one may be a mistyped secret.
            log.info("token request refused: %s (%s)", exc.error, exc.client or "unauthenticated")
            return exc.response(realm)
        client, audience, scope = grant.client, grant.audience, grant.scope
        now = int(time.time())
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": issuer,
            "sub": client,
            "client_id": client,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": jti,
            "scope": scope,
        }
        access_token = signer.sign(claims)
        stats.count(client, issued=True)
        log.info("issued a token to %s for %s (jti %s, %d s)", client, audience, jti, ttl_seconds)
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl_seconds,
            "scope": scope,
        }
        return JSONResponse(body, headers=NO_STORE)

    @router.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        # Short-lived in caches: a restarted service has a new key, and verifiers refetch on a new kid anyway.
        return JSONResponse(signer.jwks(), headers={"Cache-Control": "public, max-age=60"})

    @router.get("/.well-known/oauth-authorization-server")
    async def metadata(request: Request) -> dict[str, object]:
        base = str(request.base_url).rstrip("/")
        return {
            "issuer": issuer,
            "token_endpoint": base + TOKEN_PATH,
            "jwks_uri": base + "/.well-known/jwks.json",
            "grant_types_supported": [GRANT_TYPE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": sorted({s for spec in clients.values() for s in spec.scopes or []}),
            "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
        }

    return router
