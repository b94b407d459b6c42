"""Header lists as the cache keeps them: lower-case names, order kept, list values split."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "HeaderInput",
    "Headers",
    "first_header",
    "first_member",
    "header_values",
    "normalize_headers",
    "split_list",
]

#: Header fields as the cache stores them: ``(lower-case name, value)`` pairs, in order.
Headers = tuple[tuple[str, str], ...]
#: What the helpers accept: a mapping (a ``CIMultiDict`` too, through ``items()``) or pairs.
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]


def normalize_headers(headers: HeaderInput | None) -> Headers:
    """``headers`` as ``(lower-case name, stripped value)`` pairs, repeated fields kept in order."""
    if headers is None:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((name.strip().lower(), value.strip()) for name, value in pairs)


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of the field ``name`` (lower-case), one per field line, in order."""
    return [value for key, value in headers if key == name]


def first_header(headers: Headers, name: str) -> str | None:
    """The value of the first field line ``name``, or None (RFC 9111 §4.2: first occurrence wins).

    Not split on commas: an HTTP-date holds one (``Sun, 06 Nov 1994 ...``).
    """
    for key, value in headers:
        if key == name:
            return value
    return None


def first_member(headers: Headers, name: str) -> str | None:
    """The first list member of the field ``name`` (RFC 9111 §5.1 for a list-valued Age), or None."""
    for key, value in headers:
        if key == name:
            members = split_list(value)
            return members[0] if members else None
    return None


def split_list(value: str) -> list[str]:
    """A comma-separated list split outside quoted strings, members stripped, empty ones dropped."""
    members: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            members.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    members.append("".join(current).strip())
    return [m for m in members if m]
