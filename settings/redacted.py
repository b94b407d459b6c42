"""Settings as JSON for people: every secret replaced, credentials cut out of URLs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr
from yarl import URL

from app.redaction import REDACTED, is_secret_key, scrub_deep
from settings.config import Settings

__all__ = ["redacted_settings", "secret_values", "settings_digest", "without_credentials"]


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """Every field of ``settings`` as JSON-able values, with no secret in them.

    ``SecretStr`` fields (API keys, the admin token, the Redis URL) become ``***``; a URL
    in any other text loses its user, password and secret-looking query values; and any
    secret registered with ``app.redaction`` is masked wherever it still appears.
    """
    return dict(scrub_deep(_model(settings)))


def settings_digest(settings: Settings) -> str:
    """``sha256:<hex>`` of the redacted settings: what to compare across replicas, safe to publish.

    Not the file's bytes: a digest of those, served openly, would let anyone test guesses
    of a secret in the file offline. A change of a secret alone does not move this one
    (the version does), nor does where it listens (host, port).
    """
    # Where the process listens is its own, not the fleet's configuration: replicas on one
    # machine differ in port and must still show one digest.
    view = {k: v for k, v in redacted_settings(settings).items() if k not in ("host", "port")}
    text = json.dumps(view, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold (each ``SecretStr``, and a password inside one that is a URL)."""
    found: list[str] = []
    _secrets(settings, found)
    return found


def _secrets(value: Any, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        found.append(secret)
        if "://" in secret:
            try:
                password = URL(secret).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _secrets(getattr(value, name), found)
    elif isinstance(value, Mapping):
        for item in value.values():
            _secrets(item, found)


def without_credentials(text: str) -> str:
    """``text`` with a URL's user, password and secret-looking query values replaced; other text as is."""
    if "://" not in text:
        return text
    try:
        url = URL(text)
    except ValueError:
        return text
    if not url.absolute:
        return text
    clean = url
    if url.user is not None or url.password is not None:
        clean = clean.with_user(REDACTED).with_password(REDACTED if url.password is not None else None)
    if any(is_secret_key(key) for key in url.query):
        clean = clean.with_query([(k, REDACTED if is_secret_key(k) else v) for k, v in url.query.items()])
    return text if clean is url else str(clean)


def _model(model: BaseModel) -> dict[str, Any]:
    return {name: _plain(getattr(model, name)) for name in type(model).model_fields}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, BaseModel):
        return _model(value)
    if isinstance(value, Mapping):
        # A value under a secret-looking key (an OAuth2 extra param such as
        # client_assertion) is masked even though it is a plain string.
        return {str(k): REDACTED if is_secret_key(str(k)) else _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        if isinstance(value, set | frozenset):
            # A set has no order of its own: sorted, by repr when the types are mixed.
            kinds = {type(v) for v in items}
            items.sort(key=None if len(kinds) == 1 else repr)
        return items
    return without_credentials(str(value))
