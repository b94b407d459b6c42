"""StaticCredentials: an API key or a static bearer token, one header computed once."""

from __future__ import annotations

from app.auth.config import ApiKeyAuth, AuthConfig, BearerAuth
from app.redaction import register_secret

__all__ = ["StaticCredentials", "static_credentials"]


class StaticCredentials:
    """A credential that never changes: the client sends it with its fixed headers, at no cost per call.

    Whoever builds one registers its secret with ``app.redaction`` (``static_credentials`` does).
    """

    __slots__ = ("header", "static_value")

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        #: The header's value, the same on every call.
        self.static_value = value

    def __repr__(self) -> str:
        return f"StaticCredentials(header={self.header!r})"

    def current(self) -> str:
        """The header value."""
        return self.static_value

    async def authorization(self, timeout: float | None = None) -> str:
        """The header value, at once."""
        return self.static_value

    def rejected(self, sent: str) -> bool:
        """False: the same value again would be refused again."""
        return False

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def static_credentials(auth: AuthConfig | None) -> StaticCredentials | None:
    """The credential of a static kind (``api_key``, ``bearer``); None for none, or for one that changes."""
    # The secret itself is registered, never "Bearer <token>": its start "Bearer" would be
    # masked at the end of any text (scrub_cut takes it for a cut-off secret).
    if isinstance(auth, ApiKeyAuth):
        key = auth.key.get_secret_value()
        register_secret(key)
        return StaticCredentials(auth.header, key)
    if isinstance(auth, BearerAuth):
        token = auth.token.get_secret_value()
        register_secret(token)
        return StaticCredentials("Authorization", f"Bearer {token}")
    return None
