"""The cache key: method, normalized URL and the caller's credential scope."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["CacheKey", "cache_key", "normalize_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """``url`` with a lower-case scheme and host, no default port, no fragment, ``/`` for an empty path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{parts.port}"
    if parts.username is not None:
        # Userinfo is a credential: the scope says whose entry it is, the key never holds it.
        raise ValueError("a cache key URL must not carry userinfo")
    path = parts.path or ("/" if netloc else "")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where one stored response lives: two credential scopes never share an entry."""

    method: str
    url: str
    scope: str

    @property
    def digest(self) -> str:
        """A SHA-256 of the three parts: a fixed-size name for a shared store, scope not readable."""
        raw = "\x00".join((self.method, self.url, self.scope)).encode()
        return hashlib.sha256(raw).hexdigest()

    def __repr__(self) -> str:
        # The scope may name a credential; a log shows only a short fingerprint of it.
        fingerprint = hashlib.sha256(self.scope.encode()).hexdigest()[:8]
        return f"CacheKey({self.method} {self.url} scope#{fingerprint})"


def cache_key(method: str, url: str, scope: str) -> CacheKey:
    """The key of a request: upper-case method, normalized URL, and the credential scope as given."""
    return CacheKey(method.strip().upper(), normalize_url(url), scope)
