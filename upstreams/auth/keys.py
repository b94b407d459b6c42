"""The service's signing key: generated at start, held in memory only, published as a JWK."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["ALGORITHM", "Signer"]

ALGORITHM = "RS256"


class Signer:
    """An RSA key pair that signs access tokens; its kid is the RFC 7638 thumbprint of its public key."""

    def __init__(self, key_size: int = 2048) -> None:
        # Never written anywhere: a restart makes a new key, and the old tokens die with the old one.
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        public = RSAAlgorithm.to_jwk(self._private.public_key(), as_dict=True)
        public.pop("key_ops", None)  # RFC 7517 §4.3: not alongside "use"
        self.kid = _thumbprint(public)
        self.jwk: dict[str, Any] = {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def sign(self, claims: dict[str, Any]) -> str:
        """``claims`` as a compact JWS, typed as an OAuth access token (RFC 9068)."""
        return jwt.encode(
            claims, self._private, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWK Set that publishes the public key."""
        return {"keys": [dict(self.jwk)]}


def _thumbprint(jwk: dict[str, Any]) -> str:
    # RFC 7638: the required members, in lexicographic order, no whitespace, SHA-256.
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
