"""Cache-Control parsing (RFC 9111 §5.2), request and response directives, tolerant of odd input.

Rules for what is odd (RFC 9111 §4.2.1, §5.2, §1.2.2):

- names are case-insensitive; spaces around ``=`` and around members are tolerated; an
  argument may be a token or a quoted string (``max-age="60"`` is ``max-age=60``);
- a duplicated directive keeps its first value (§4.2.1: "the first occurrence");
- an invalid ``max-age`` or ``s-maxage`` (not a non-negative integer) becomes 0, so the
  response is stale (§4.2.1: "consider responses with invalid freshness information to be
  stale"); an invalid ``stale-while-revalidate``, ``stale-if-error``, ``min-fresh`` or
  ``max-stale`` argument is ignored, which never serves anything staler;
- a delta-seconds beyond 2^31 is 2^31 (§1.2.2);
- ``no-cache`` and ``private`` unqualified win over their qualified forms (the most
  restrictive directive is honoured); qualified forms list lower-case field names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from app.cache.headers import split_list

__all__ = ["CacheControl", "MAX_DELTA_SECONDS", "parse_cache_control"]

#: RFC 9111 §1.2.2: the greatest delta-seconds a cache needs to represent.
MAX_DELTA_SECONDS = 2**31


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one message's Cache-Control field lines."""

    max_age: int | None = None
    s_maxage: int | None = None
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: frozenset[str] = frozenset()
    private: bool = False
    private_fields: frozenset[str] = frozenset()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    no_transform: bool = False
    immutable: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    min_fresh: int | None = None
    #: ``max-stale`` without an argument accepts any staleness: ``MAX_DELTA_SECONDS``.
    max_stale: int | None = None
    only_if_cached: bool = False
    #: Directives this parser does not know, in order, with their unquoted argument.
    extensions: tuple[tuple[str, str | None], ...] = ()

    @property
    def no_cache_qualified(self) -> bool:
        """Only the qualified form (``no-cache="field"``) is present."""
        return bool(self.no_cache_fields) and not self.no_cache

    @property
    def private_qualified(self) -> bool:
        """Only the qualified form (``private="field"``) is present."""
        return bool(self.private_fields) and not self.private


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def _delta(value: str | None) -> int | None:
    """A delta-seconds argument, or None when it is absent or not a non-negative integer."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(int(text), MAX_DELTA_SECONDS)


def _fields(value: str | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    return frozenset(name.strip().lower() for name in value.split(",") if name.strip())


_FLAGS = {
    "no-store": "no_store",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "must-understand": "must_understand",
    "no-transform": "no_transform",
    "immutable": "immutable",
    "only-if-cached": "only_if_cached",
}
_DELTAS = {
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
    "min-fresh": "min_fresh",
}
_FRESHNESS = {"max-age": "max_age", "s-maxage": "s_maxage"}


class _Collected:
    """Directives as they are met, before they become a ``CacheControl``."""

    def __init__(self) -> None:
        self.found: dict[str, object] = {}
        self.no_cache_fields: set[str] = set()
        self.private_fields: set[str] = set()
        self.extensions: list[tuple[str, str | None]] = []

    def add(self, name: str, arg: str | None) -> None:
        if name in _FLAGS:
            self.found[_FLAGS[name]] = True
        elif name in _FRESHNESS:
            # First occurrence wins; an invalid value makes the response stale.
            delta = _delta(arg)
            self.found.setdefault(_FRESHNESS[name], 0 if delta is None else delta)
        elif name in _DELTAS or name == "max-stale":
            delta = MAX_DELTA_SECONDS if name == "max-stale" and arg is None else _delta(arg)
            if delta is not None:
                self.found.setdefault(_DELTAS.get(name, "max_stale"), delta)
        elif name in {"no-cache", "private"}:
            fields = _fields(arg)
            if not fields:
                self.found[name.replace("-", "_")] = True
            elif name == "no-cache":
                self.no_cache_fields.update(fields)
            else:
                self.private_fields.update(fields)
        else:
            self.extensions.append((name, arg))

    def build(self) -> CacheControl:
        return CacheControl(
            **self.found,  # type: ignore[arg-type]
            no_cache_fields=frozenset(self.no_cache_fields),
            private_fields=frozenset(self.private_fields),
            extensions=tuple(self.extensions),
        )


_NONE = CacheControl()


def parse_cache_control(values: str | Iterable[str] | None) -> CacheControl:
    """The directives of one or more Cache-Control field values (one string per field line)."""
    if values is None:
        return _NONE
    lines = (values,) if isinstance(values, str) else tuple(values)
    return _parse(lines) if lines else _NONE


# An upstream sends the same few values over and over, and a response's are read several
# times (storability, storing, freshness): parsed once each. ``CacheControl`` is frozen,
# so one may be shared; the bound keeps hostile values from growing it.
@functools.lru_cache(maxsize=512)
def _parse(lines: tuple[str, ...]) -> CacheControl:
    collected = _Collected()
    for line in lines:
        for member in split_list(line):
            name, sep, raw = member.partition("=")
            name = name.strip().lower()
            if name:
                collected.add(name, _unquote(raw) if sep else None)
    return collected.build()
