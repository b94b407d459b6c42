"""Vary (RFC 9111 §4.1): which request headers a stored response depends on, and matching them."""

from __future__ import annotations

from app.cache.headers import Headers, header_values, split_list

__all__ = ["VaryValues", "select_vary", "vary_fields", "vary_matches"]

#: The request header values a stored response was selected by: ``(field, value or None)``.
#: ``None`` for the whole tuple stands for ``Vary: *``, which never matches.
VaryValues = tuple[tuple[str, str | None], ...] | None


def vary_fields(response_headers: Headers) -> tuple[str, ...] | None:
    """The lower-case field names the response varies on, sorted, or None for ``Vary: *``."""
    names: set[str] = set()
    for value in header_values(response_headers, "vary"):
        for member in split_list(value):
            if member == "*":
                return None
            names.add(member.lower())
    return tuple(sorted(names))


def _normalized(request_headers: Headers, name: str) -> str | None:
    """All values of ``name`` combined into one list value, whitespace collapsed (§4.1 allows it)."""
    values = header_values(request_headers, name)
    if not values:
        return None
    return ", ".join(" ".join(member.split()) for value in values for member in split_list(value))


def select_vary(response_headers: Headers, request_headers: Headers) -> VaryValues:
    """What a stored response records of the request that caused it, for the fields Vary names."""
    fields = vary_fields(response_headers)
    if fields is None:
        return None
    return tuple((name, _normalized(request_headers, name)) for name in fields)


def vary_matches(recorded: VaryValues, request_headers: Headers) -> bool:
    """A new request selects the stored response: every varied field has the same value (absent = absent)."""
    if recorded is None:
        return False
    return all(_normalized(request_headers, name) == value for name, value in recorded)
