r"""Redaction: secret-looking keys and known secret values never reach a log, an error or a response.

This module imports nothing of ``app``, so the error tree can scrub with it too.

Two mechanisms:

- by name: ``redact`` replaces the value of any header, param or JSON key that looks
  like a credential (``is_secret_key``);
- by value: ``register_secret`` remembers a secret (clients register their API key),
  ``register_temporary_secret`` one that is replaced over time (an access token)
  until ``forget_secret``, so the registry stays bounded; ``scrub`` masks each in any
  text, in every form an encoder may have put it in: as is, percent-encoded (upper or
  lower case hex, ``+`` for a space), JSON-escaped (``\"``, ``\/``, ``\uXXXX``, once or
  twice), or Python-escaped.

Secrets shorter than ``MIN_SUBSTRING_SECRET`` (4) characters are masked too, but only
where they stand as a whole token (no letter or digit on either side): masked as
substrings they would eat ordinary words ("abc" in "abcdef"). A secret that short is no
secret; the settings should refuse it, and until they do it is at least never shown
as a token of its own.
"""

from __future__ import annotations

import collections
import re
import string
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

__all__ = [
    "MIN_SUBSTRING_SECRET",
    "REDACTED",
    "contains_secret",
    "forget_secret",
    "is_secret_key",
    "redact",
    "register_secret",
    "register_temporary_secret",
    "scrub",
    "scrub_cut",
    "scrub_deep",
    "truncate",
]

REDACTED = "***"
BODY_LOG_LIMIT = 2048
#: Registered secrets at least this long are masked wherever they occur; shorter ones
#: only as a whole token.
MIN_SUBSTRING_SECRET = 4

_SECRET_KEY = re.compile(
    r"(key|token|secret|passw(or)?d|pwd|authorization|cookie|credential|session|signature|auth|assertion)",
    re.IGNORECASE,
)
# Characters no URL or JSON encoder escapes (RFC 3986 unreserved): a secret made only of
# these looks the same in every form, and plain ``str.replace`` masks it.
_PLAIN = frozenset(string.ascii_letters + string.digits + "-._~")
_MAX_DEPTH = 32


class _Secret(NamedTuple):
    """One registered secret, ready to be found fast."""

    #: A substring every form of the secret contains (its longest run of plain
    #: characters): when it is absent, the secret is too, and no regex runs.
    probe: str
    value: str
    #: None when ``value`` is all plain characters and long enough: ``str.replace``.
    pattern: re.Pattern[str] | None


_known: dict[str, _Secret] = {}
_known_lock = threading.Lock()
# Secrets registered for good, and the temporary ones with how many holders each has:
# a value leaves ``_known`` only when no holder is left and it was never registered for good.
_permanent: set[str] = set()
_temporary: collections.Counter[str] = collections.Counter()
# Longest first, so a secret that contains another is replaced whole. Rebuilt on change
# only; readers take the tuple without a lock.
_secrets: tuple[_Secret, ...] = ()
# Where any long-enough secret's first characters start (overlapping matches), for
# scrub_cut; and the longest secret's length.
_heads: re.Pattern[str] | None = None
_longest = 0


def _char_forms(char: str) -> str:
    """A regex group for every way an encoder may write ``char``."""
    utf8 = char.encode()
    forms = {
        char,
        "".join(f"%{b:02x}" for b in utf8),  # percent-encoding, either case of hex
        "".join(f"%{b:02X}" for b in utf8),
        orjson.dumps(char).decode()[1:-1],  # JSON as orjson and FastAPI write it
    }
    if char == " ":
        forms.add("+")  # form encoding
    if char == "/":
        forms.add("\\/")  # a legal JSON escape some encoders use
    if char == "'":
        forms.add("\\'")  # Python's repr
    code = ord(char)
    if code > 0x7F:  # JSON with ensure_ascii (Python's json.dumps): \uXXXX, surrogates past the BMP
        units = [code] if code <= 0xFFFF else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + (code & 0x3FF)]
        forms.add("".join(f"\\u{u:04x}" for u in units))
        forms.add("".join(f"\\u{u:04X}" for u in units))
    # JSON inside JSON: an upstream's detail list rendered as text, then sent on as a string.
    forms |= {orjson.dumps(form).decode()[1:-1] for form in forms}
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")"


def _compile(value: str) -> _Secret:
    runs = re.findall(r"[A-Za-z0-9\-._~]+", value)
    probe = max(runs, key=len) if runs else ""
    short = len(value) < MIN_SUBSTRING_SECRET
    if not short and all(c in _PLAIN for c in value):
        return _Secret(probe, value, None)
    body = "".join(re.escape(c) if c in _PLAIN else _char_forms(c) for c in value)
    if short:
        body = rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])"
    return _Secret(probe, value, re.compile(body))


def is_secret_key(name: str) -> bool:
    """True for a header, param or JSON key whose value must never be logged."""
    return _SECRET_KEY.search(name) is not None


def register_secret(value: str | None) -> None:
    """Remember a secret value (an API key) so that ``scrub`` removes it from any text.

    Any non-empty value is kept; one shorter than ``MIN_SUBSTRING_SECRET`` is masked
    only as a whole token (see the module's docstring).
    """
    if not value:
        return
    with _known_lock:
        _permanent.add(value)
        _add(value)


def register_temporary_secret(value: str) -> None:
    """Remember a secret until :func:`forget_secret` (an access token, replaced as it expires).

    Every text ``scrub`` masks costs a look for each registered secret: a process that
    fetches a token every few minutes must not keep them all. Each registration needs
    its own ``forget_secret``; a value also registered for good is never forgotten.
    """
    if not value:
        return
    with _known_lock:
        _temporary[value] += 1
        _add(value)


def forget_secret(value: str) -> None:
    """Undo one :func:`register_temporary_secret` of ``value``; it stays masked while others hold it."""
    with _known_lock:
        holders = _temporary.get(value, 0)
        if holders == 0:
            return  # not (or no longer) held: nothing of anyone else's is dropped
        if holders > 1:
            _temporary[value] = holders - 1
            return
        del _temporary[value]
        if value not in _permanent:
            del _known[value]
            _rebuild()


def _add(value: str) -> None:
    """Compile ``value`` into the registry (the caller holds the lock)."""
    if value not in _known:
        _known[value] = _compile(value)
        _rebuild()


def _rebuild() -> None:
    """The readers' view of the registry, after a change (the caller holds the lock)."""
    global _secrets, _heads, _longest  # noqa: PLW0603 - one process-wide registry, rebuilt on change only
    _secrets = tuple(sorted(_known.values(), key=lambda s: len(s.value), reverse=True))
    heads = {s.value[:MIN_SUBSTRING_SECRET] for s in _secrets if len(s.value) > MIN_SUBSTRING_SECRET}
    _heads = re.compile("(?=" + "|".join(map(re.escape, sorted(heads))) + ")") if heads else None
    _longest = len(_secrets[0].value) if _secrets else 0


def scrub(text: str) -> str:
    """``text`` with every registered secret, in any of its encoded forms, replaced by ``***``."""
    for probe, value, pattern in _secrets:
        if probe in text:
            text = text.replace(value, REDACTED) if pattern is None else pattern.sub(REDACTED, text)
    return text


def contains_secret(text: str) -> bool:
    """True when ``text`` holds a registered secret in any form (a cheap test first)."""
    for probe, value, pattern in _secrets:
        if probe in text and (value in text if pattern is None else pattern.search(text) is not None):
            return True
    return False


def scrub_cut(text: str) -> str:
    """``scrub``, and also mask a secret's beginning left at the end of ``text``.

    For text that may have been cut to a length limit before it got here (an upstream's
    error detail): a cut through the middle of a secret would leave its first
    characters, which no full-secret match finds.
    """
    text = scrub(text)
    heads = _heads
    if heads is None:
        return text
    # Only the last (longest secret - 1) characters can hold a cut-off beginning; one
    # regex pass over them finds every place a secret's first characters start.
    for match in heads.finditer(text, max(0, len(text) - _longest + 1)):
        rest = text[match.start() :]
        if any(len(s.value) > len(rest) and s.value.startswith(rest) for s in _secrets):
            return text[: match.start()] + REDACTED
    return text


def scrub_deep(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON-like) with registered secrets masked in every key and value.

    Unlike scrubbing the serialised text, this never breaks the JSON structure (a
    short secret "200" in ``"status":200``); numbers and other objects whose text is
    a secret are replaced whole.
    """
    if isinstance(value, str):
        return scrub(value)
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            scrub(k) if isinstance(k, str) else scrub_deep(k, _depth + 1): scrub_deep(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_deep(v, _depth + 1) for v in value]
    # A number, or an object orjson's ``default=str`` would write as its text.
    text = "" if value is None or isinstance(value, bool) else str(value)
    if not contains_secret(text):
        return value
    return REDACTED if isinstance(value, int | float) else scrub(text)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON-like): secret-looking keys' values replaced, known secrets scrubbed."""
    if _depth > _MAX_DEPTH:
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
