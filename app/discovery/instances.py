"""Validation and normal form of a discovered set of instance base URLs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from yarl import URL

from app.discovery.source import DiscoveryError

__all__ = ["normalise_instance", "normalise_instances"]

# A host name as yarl leaves it (lower case, IDNA already encoded); ``_`` is allowed
# because service names and some internal zones use it.
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?$")
# Long enough to recognise an entry in a log line, short enough not to flood it.
_SHOWN = 120


def _shown(entry: str) -> str:
    """The entry as far as it is safe to show: none of it past a scheme when it holds an ``@``.

    What sits before an ``@`` may be a password, and a malformed entry cannot be parsed
    to strip it, so such an entry is never shown.
    """
    at = entry.find("@")
    if at >= 0:
        scheme = entry.split("://", 1)[0] if "://" in entry else ""
        return repr(f"{scheme}://<credentials>@..." if scheme else "<entry with credentials>")
    return repr(entry if len(entry) <= _SHOWN else entry[:_SHOWN] + "...")


def normalise_instance(entry: object) -> str:
    """``entry`` as an absolute http(s) base URL ending in one ``/``; ``DiscoveryError`` if it is not one."""
    if not isinstance(entry, str):
        raise DiscoveryError(f"an instance is a {type(entry).__name__}, not a URL string")
    # yarl accepts spaces and control characters in a host; no real base URL has them.
    if not entry or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in entry):
        raise DiscoveryError(f"instance {_shown(entry)} is empty or contains whitespace")
    try:
        url = URL(entry)
        port = url.port
    except ValueError as exc:
        raise DiscoveryError(f"instance {_shown(entry)} is not a URL: {exc}") from None
    if url.user is not None or url.password is not None:
        # The entry itself is not shown: what sits before the @ may be a password.
        raise DiscoveryError(f"an instance on host {url.host!r} carries credentials (user@); not allowed")
    if not url.is_absolute() or url.scheme not in {"http", "https"}:
        raise DiscoveryError(f"instance {_shown(entry)} is not an absolute http:// or https:// URL")
    host = url.host or ""
    if not _valid_host(host):
        raise DiscoveryError(f"instance {_shown(entry)} has no valid host")
    if port == 0:
        raise DiscoveryError(f"instance {_shown(entry)} has port 0")
    if url.query_string or url.fragment:
        raise DiscoveryError(f"instance {_shown(entry)} has a query or fragment; a base URL has neither")
    return str(url).rstrip("/") + "/"


def _valid_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST.match(host)) and ".." not in host


def normalise_instances(entries: Iterable[object]) -> tuple[str, ...]:
    """Each entry normalised, duplicates dropped (first kept); ``DiscoveryError`` if one is bad or none."""
    seen: dict[str, None] = {}
    for entry in entries:
        seen.setdefault(normalise_instance(entry), None)
    if not seen:
        raise DiscoveryError("the update lists no instances")
    return tuple(seen)
