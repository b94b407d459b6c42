"""Bearer JWTs checked against a JWKS: signature, audience, issuer and lifetime (RFC 6750, RFC 7519)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt
from fastapi import APIRouter, Request
from jwt import PyJWK, PyJWKClient

from upstreams.common.errors import UpstreamError

__all__ = ["InvalidTokenError", "JwksUnavailableError", "JwtVerifier", "bearer_guard", "revocation_router"]

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
#: An unknown kid refetches the JWKS at most this often: a flood of forged kids costs one fetch a second.
REFRESH_COOLDOWN_SECONDS = 1.0
#: Revocation bookkeeping is pruned of expired tokens once it holds this many.
_PRUNE_AT = 10_000


class InvalidTokenError(Exception):
    """A token refused; the message is a fixed reason, never a part of the token."""


class JwksUnavailableError(Exception):
    """The key set could not be fetched, so the token could not be checked either way."""


class JwtVerifier:
    """Verifies RS256 access tokens for one audience with keys from a JWKS URL.

    The key set is fetched on first use with pyjwt's ``PyJWKClient`` (in a thread: its
    urllib call would block the event loop), kept for ``cache_seconds``, and fetched
    again, once for all concurrent callers, when a token names a kid it does not hold.
    """

    def __init__(
        self,
        jwks_url: str,
        audience: str,
        *,
        issuer: str | None = None,
        leeway_seconds: float = 5.0,
        cache_seconds: float = 300.0,
        fetch_timeout_seconds: float = 3.0,
        refresh_cooldown_seconds: float = REFRESH_COOLDOWN_SECONDS,
        revocable: bool = False,
    ) -> None:
        # Its own set cache is off: this class caches, so that a lookup never touches I/O.
        self._client = PyJWKClient(jwks_url, cache_jwk_set=False, timeout=fetch_timeout_seconds)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway_seconds
        self.cache_seconds = cache_seconds
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self.cooldown = refresh_cooldown_seconds
        self._tried_at = -refresh_cooldown_seconds
        self._lock = asyncio.Lock()
        #: The background refresh of an old key set, while it runs.
        self._refresh: asyncio.Task[None] | None = None
        self._revocable = revocable
        #: jti -> exp of every token accepted (when revocable), and of those revoked since.
        self._accepted: dict[str, float] = {}
        self._revoked: dict[str, float] = {}

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidTokenError (or JwksUnavailableError) saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError(f"token not signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token names no key (kid)")
        key = await self._key(kid)
        required = ["exp", "iat", "aud", "sub", *(["iss"] if self.issuer else [])]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidTokenError("token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError(f"token not issued for {self.audience}") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("token from an untrusted issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("token signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidTokenError("malformed token") from None
        self._check_revocation(claims)
        return claims

    def revoke_accepted(self) -> int:
        """Refuse from now on every token accepted so far (a test's revocation); how many."""
        self._revoked.update(self._accepted)
        count = len(self._accepted)
        self._accepted.clear()
        return count

    def _check_revocation(self, claims: dict[str, Any]) -> None:
        if not self._revocable:
            return
        jti = claims.get("jti")
        if not isinstance(jti, str):
            return
        if jti in self._revoked:
            raise InvalidTokenError("token revoked")
        self._accepted[jti] = float(claims["exp"])
        if len(self._accepted) >= _PRUNE_AT or len(self._revoked) >= _PRUNE_AT:
            horizon = time.time() - self.leeway
            for book in (self._accepted, self._revoked):
                for stale in [j for j, exp in book.items() if exp < horizon]:
                    del book[stale]

    async def _key(self, kid: str) -> PyJWK:
        held = self._keys.get(kid)
        if held is not None:
            # A held key is served at once, even from an old set: an old set is refreshed in
            # the background, so a slow or absent token service never holds a request.
            if self._stale() and self._refresh is None and self._cooled():
                self._refresh = asyncio.get_running_loop().create_task(self._refresh_quietly())
            return held
        async with self._lock:  # one fetch for every caller waiting on the same unknown kid
            if (key := self._keys.get(kid)) is not None:
                return key
            # A kid not held: fetch, but not more than once a cooldown (from the end of the
            # last fetch), whether the last one failed or the kid is a forgery.
            if self._cooled():
                await self._fetch()
            elif not self._keys:
                raise JwksUnavailableError
        key = self._keys.get(kid)
        if key is None:
            raise InvalidTokenError("token signed by an unknown key")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.cache_seconds

    def _cooled(self) -> bool:
        return time.monotonic() - self._tried_at >= self.cooldown

    async def _refresh_quietly(self) -> None:
        try:
            async with self._lock:
                await self._fetch()
        except JwksUnavailableError:
            pass  # logged by _fetch; the held keys stay
        finally:
            self._refresh = None

    async def _fetch(self) -> None:
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            self._tried_at = time.monotonic()
            if not self._keys:
                log.warning("cannot fetch the token keys from %s: %s", self._client.uri, type(exc).__name__)
                raise JwksUnavailableError from None
            # A key set already held stays in use through an outage of the token service.
            log.warning(
                "cannot refresh the token keys from %s; keeping the %d held",
                self._client.uri,
                len(self._keys),
            )
            return
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._fetched_at = self._tried_at = time.monotonic()
        log.info("fetched %d token signing keys from %s", len(self._keys), self._client.uri)


def bearer_guard(verifier: JwtVerifier, realm: str) -> Any:
    """A FastAPI dependency that admits a request only with a valid ``Authorization: Bearer`` JWT."""

    async def check(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            # RFC 6750 §3.1: a request with no credentials gets no error code, only the scheme.
            raise UpstreamError(
                401, "missing bearer token", "unauthorized", {"WWW-Authenticate": f'Bearer realm="{realm}"'}
            )
        try:
            await verifier.verify(token)
        except InvalidTokenError as exc:
            log.info("bearer token refused: %s", exc)
            challenge = f'Bearer realm="{realm}", error="invalid_token", error_description="{exc}"'
            raise UpstreamError(
                401, f"invalid bearer token: {exc}", "unauthorized", {"WWW-Authenticate": challenge}
            ) from None
        except JwksUnavailableError:
            # Not the caller's fault: a 401 would only make it fetch a new token for nothing.
            raise UpstreamError(
                503, "token keys unavailable; cannot verify tokens", "jwks_unavailable", {"Retry-After": "1"}
            ) from None

    return check


def revocation_router(verifier: JwtVerifier) -> APIRouter:
    """``POST /api/v1/chaos/revoke-tokens``: every token accepted so far becomes a 401 (tests only)."""
    router = APIRouter(prefix="/api/v1/chaos", tags=["chaos"])

    @router.post("/revoke-tokens")
    async def revoke_tokens() -> dict[str, int]:
        return {"revoked": verifier.revoke_accepted()}

    return router
