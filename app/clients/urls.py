"""Staying under the base URL: endpoint templates filled safely, and redirects followed only there."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

from yarl import URL

from app.clients.response import header_text
from app.errors import ClientResponseError, ErrorContext

__all__ = ["EndpointResolver", "MAX_REDIRECTS", "REDIRECT_STATUSES", "RedirectGuard"]

#: Redirects one attempt follows at most (with ``follow_redirects``), and the statuses that are ones.
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

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

    __slots__ = ("_base", "_prefix", "_templates", "plain_urls")

    def __init__(self, base_url: str) -> None:
        base = URL(base_url)
        self._prefix = str(base).rstrip("/") + "/"
        self._base = base
        self._templates: dict[str, tuple[str, frozenset[str]]] = {}
        #: Templates without placeholders resolve to the same URL every time: each built once,
        #: here after its first ``resolve``. A caller may look one up first (the client's
        #: hot path does, a method call fewer); only ``resolve`` adds to it.
        self.plain_urls: dict[str, URL] = {}

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
            plain = self.plain_urls.get(template)
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
            if not names and len(self.plain_urls) < 1024:
                resolved = self.plain_urls[template] = URL(url, encoded=True)
                return resolved
        # encoded=True: yarl must not decode %2F or %2E back into path structure.
        return URL(url, encoded=True)


class RedirectGuard:
    """Decides a redirect's next hop: only under the base URL (same origin, same path prefix).

    Following it elsewhere would hand our API key to whatever the Location names.
    Credentials in a Location are refused, never used.
    """

    __slots__ = ("_origin", "_path_prefix")

    def __init__(self, base_url: str) -> None:
        base = URL(base_url)
        self._origin = base.origin()
        self._path_prefix = base.raw_path  # ends in "/": the config normalises base_url

    def next_hop(
        self,
        status: int,
        location: str | None,
        *,
        method: str,
        url: URL,
        body: bytes | None,
        context: ErrorContext,
    ) -> tuple[str, URL, bytes | None]:
        """The method, URL and body of the next hop, or a ``ClientResponseError`` that says why not."""
        if not location:
            raise ClientResponseError("redirect without Location", status=status, **context)
        kept = header_text(location)
        try:
            target = url.join(URL(location))
            origin = target.origin()
            path = target.path
        except (ValueError, TypeError) as exc:  # yarl: a bad IPv6 literal or port, surrogates
            raise ClientResponseError(
                "malformed redirect Location", status=status, location=kept, **context
            ) from exc
        if origin != self._origin:
            raise ClientResponseError(
                "refusing a cross-origin redirect", status=status, location=kept, **context
            )
        if target.raw_user is not None or target.raw_password is not None:
            raise ClientResponseError(
                "refusing a redirect with credentials in its Location",
                status=status,
                location=str(target.with_user(None)),  # the credentials are not kept either
                **context,
            )
        if not target.raw_path.startswith(self._path_prefix) or any(
            segment in (".", "..") for segment in path.split("/")
        ):
            raise ClientResponseError(
                "refusing a redirect outside the base URL's path", status=status, location=kept, **context
            )
        if target.raw_fragment:
            target = target.with_fragment(None)
        if status == 303 or (status in (301, 302) and method == "POST"):
            return "GET", target, None
        return method, target, body
