"""Endpoint templates: fill ``{name}`` placeholders safely and never leave the base URL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

from yarl import URL

__all__ = ["EndpointResolver"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# What a path may hold as is (RFC 3986 pchar and "/"), plus "%" for escapes already there.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
# A "%" that does not start an escape is a literal percent sign.
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _encode_literal(text: str) -> str:
    """A template's literal text, percent-encoded like a path (UTF-8 for non-ASCII)."""
    if text.isascii() and not any(c in text for c in '"<>[]^`{|}%'):
        return text  # the usual template: nothing to do
    return quote(_STRAY_PERCENT.sub("%25", text), safe=_PATH_SAFE)


def _encode_segment_value(value: object) -> str:
    text = str(value)
    try:
        encoded = quote(text, safe="")
    except UnicodeEncodeError:
        raise ValueError("path parameter values must be valid text (no lone surrogates)") from None
    if encoded in ("", ".", ".."):
        # quote() leaves dots alone, and an empty value would merge two segments.
        if not encoded:
            raise ValueError("path parameter values must not be empty")
        encoded = encoded.replace(".", "%2E")
    return encoded


class EndpointResolver:
    """Turns ``(template, path_params)`` into a URL under ``base_url``.

    A template is relative to ``base_url`` (a leading ``/`` is ignored). It is refused
    with ``ValueError`` when it is absolute, holds a ``..`` or ``.`` segment (also
    percent-encoded), a query, a fragment, a backslash or a control character. Its
    literal text is percent-encoded as a path is (non-ASCII as UTF-8, escapes already
    there kept), and each parameter value as one segment, so a value cannot add
    segments. Checked templates are cached; filling them is a string format.
    """

    __slots__ = ("_base", "_plain", "_prefix", "_templates")

    def __init__(self, base_url: str) -> None:
        base = URL(base_url)
        self._prefix = str(base).rstrip("/") + "/"
        self._base = base
        self._templates: dict[str, tuple[str, frozenset[str]]] = {}
        # Templates without placeholders resolve to the same URL every time: built once.
        self._plain: dict[str, URL] = {}

    def _check(self, template: str) -> tuple[str, frozenset[str]]:
        checked = self._templates.get(template)
        if checked is not None:
            return checked
        raw = template.lstrip("/")
        if template.startswith("//") or _SCHEME.match(template):
            raise ValueError(f"endpoint {template!r} must be relative to the base URL")
        if any(c in raw for c in "?#\\") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
            raise ValueError(f"endpoint {template!r} must be a plain path (use params= for queries)")
        for segment in unquote(raw).split("/"):
            if segment in (".", ".."):
                raise ValueError(f"endpoint {template!r} must not contain '.' or '..' segments")
        names = frozenset(_PLACEHOLDER.findall(raw))
        # Literal text is encoded (braces that are not placeholders become %7B/%7D), so
        # str.format fills only the placeholders.
        try:
            pieces = _PLACEHOLDER.split(raw)  # literal, name, literal, name, ..., literal
            fmt = "".join(
                _encode_literal(piece) if i % 2 == 0 else "{" + piece + "}" for i, piece in enumerate(pieces)
            )
        except UnicodeEncodeError:
            raise ValueError(f"endpoint {template!r} must be valid text (no lone surrogates)") from None
        prefix = self._prefix.replace("{", "{{").replace("}", "}}")
        checked = (prefix + fmt, names)
        if len(self._templates) < 1024:  # bounded: templates are code, not data
            self._templates[template] = checked
        return checked

    def resolve(self, template: str, path_params: Mapping[str, object] | None = None) -> URL:
        """The absolute URL for ``template`` filled from ``path_params``."""
        if not path_params:
            plain = self._plain.get(template)
            if plain is not None:
                return plain
        fmt, names = self._check(template)
        given = path_params or {}
        if names or given:
            missing = names - given.keys()
            extra = given.keys() - names
            if missing or extra:
                raise ValueError(
                    f"endpoint {template!r}: missing path params {sorted(missing)}, "
                    f"unexpected {sorted(extra)}"
                )
            url = fmt.format_map({k: _encode_segment_value(v) for k, v in given.items()})
        else:
            url = fmt.replace("{{", "{").replace("}}", "}")
            if not names and len(self._plain) < 1024:
                resolved = self._plain[template] = URL(url, encoded=True)
                return resolved
        # encoded=True: yarl must not decode %2F or %2E back into path structure.
        return URL(url, encoded=True)
