"""Redaction: secret-looking keys and known secret values never reach a log line."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "register_secret", "scrub", "truncate"]

REDACTED = "***"
BODY_LOG_LIMIT = 2048

_SECRET_KEY = re.compile(
    r"(key|token|secret|passw(or)?d|pwd|authorization|cookie|credential|session|signature|auth)",
    re.IGNORECASE,
)
_known: set[str] = set()
_known_lock = threading.Lock()
_known_sorted: tuple[str, ...] = ()


def is_secret_key(name: str) -> bool:
    """True for a header, param or JSON key whose value must never be logged."""
    return _SECRET_KEY.search(name) is not None


def register_secret(value: str | None) -> None:
    """Remember a secret value (an API key) so that ``scrub`` removes it from any text."""
    global _known_sorted  # noqa: PLW0603 - one process-wide registry, rebuilt on change only
    if not value or len(value) < 4:  # too short to scrub without mangling ordinary text
        return
    with _known_lock:
        if value not in _known:
            _known.add(value)
            # Longest first, so a secret that contains another is replaced whole.
            _known_sorted = tuple(sorted(_known, key=len, reverse=True))


def scrub(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for secret in _known_sorted:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON-like) with secret-looking keys' values replaced."""
    if _depth > 32:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def truncate(text: str, limit: int = BODY_LOG_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"…[{len(text) - limit} more]"
