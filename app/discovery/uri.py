"""Parsing a discovery URI into the source it names, without opening anything."""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from yarl import URL

from app.discovery.etcd_source import EtcdSource
from app.discovery.file_source import FileSource
from app.discovery.source import DiscoverySource

if TYPE_CHECKING:
    from app.discovery.dns_source import DnsSource

__all__ = ["SCHEMES", "parse_discovery"]

#: The schemes a discovery URI may have.
SCHEMES = ("dns", "dns+srv", "etcd", "file")
ETCD_DEFAULT_PORT = 2379
DNS_PORT = 53
# A DNS label as services use them: letters, digits, hyphens, and the leading
# underscore of SRV's _service._proto labels.
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?$")
_EXAMPLES = {
    "file": "file:///etc/app/instances.json",
    "dns+srv": "dns+srv://_ae._tcp.example.internal",
    "dns": "dns://ae.example.internal:9001",
    "etcd": "etcd://127.0.0.1:2379/services/ae/",
}


def parse_discovery(
    uri: str, base_url: str, *, min_ttl: float = 5.0, max_ttl: float = 300.0
) -> DiscoverySource:
    """Build the source a discovery URI names; ``ValueError`` with the reason when it is malformed.

    ``file:///abs/path.json``, ``dns+srv://_svc._tcp.name``, ``dns://name:port`` (both
    DNS forms take ``?nameserver=host[:port]``, repeatable) and ``etcd://host[:port]/prefix``.
    ``base_url`` gives the scheme and path of the instances DNS finds. Pure: no I/O.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("discovery URI is empty")
    if any(c.isspace() or ord(c) < 32 for c in uri):
        raise ValueError("discovery URI contains whitespace or control characters")
    if not (math.isfinite(min_ttl) and math.isfinite(max_ttl) and 0 < min_ttl <= max_ttl):
        raise ValueError(
            f"discovery TTL bounds must satisfy 0 < min_ttl <= max_ttl, not {min_ttl}, {max_ttl}"
        )
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # urlsplit's own reasons are terse ("Invalid IPv6 URL")
        raise ValueError(f"discovery URI is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        expected = ", ".join(_EXAMPLES[s] for s in ("file", "dns+srv", "dns", "etcd"))
        raise ValueError(f"discovery URI has {shown}; expected one of {expected}")
    if "@" in parts.netloc:
        # Not echoed: what sits before the @ may be a password.
        raise ValueError(f"{scheme} discovery URI carries credentials (user@host); not supported")
    shown = uri  # safe to echo from here on: credentials were refused above
    if parts.fragment:
        raise ValueError(f"discovery URI {shown!r} has a fragment (#...); remove it")
    if scheme == "file":
        return _file(parts.netloc, parts.path, parts.query, shown)
    if scheme == "etcd":
        return _etcd(parts.netloc, parts.path, parts.query, shown)
    return _dns(scheme, parts, shown, base_url=base_url, min_ttl=min_ttl, max_ttl=max_ttl)


def _file(netloc: str, path: str, query: str, shown: str) -> FileSource:
    if netloc:
        raise ValueError(
            f"discovery URI {shown!r} names host {netloc!r}: a file URI must be local and absolute,"
            f" with three slashes, e.g. {_EXAMPLES['file']}"
        )
    if query:
        raise ValueError(f"discovery URI {shown!r} has a query; a file URI takes none")
    decoded = unquote(path)
    if "\0" in decoded:
        raise ValueError(f"discovery URI {shown!r} has a NUL in its path")
    if not decoded.startswith("/"):
        raise ValueError(
            f"discovery URI {shown!r} has a relative path; use an absolute one, e.g. {_EXAMPLES['file']}"
        )
    if decoded.endswith("/") or PurePosixPath(decoded).name in {"", ".", ".."}:
        raise ValueError(f"discovery URI {shown!r} names a directory; it must name the JSON file")
    return FileSource(Path(decoded))


def _etcd(netloc: str, path: str, query: str, shown: str) -> EtcdSource:
    host, port = _host_port(netloc, shown, default_port=ETCD_DEFAULT_PORT)
    if query:
        raise ValueError(f"discovery URI {shown!r} has a query; an etcd URI takes none")
    prefix = unquote(path)
    if prefix in {"", "/"}:
        raise ValueError(
            f"discovery URI {shown!r} has no key prefix; name one after the host, e.g. {_EXAMPLES['etcd']}"
        )
    endpoint = str(URL.build(scheme="http", host=host, port=port))
    description = f"etcd://{_netloc(host, port)}{quote(prefix)}"
    return EtcdSource(endpoint, prefix.encode("utf-8"), description=description)


def _dns(
    scheme: str, parts: SplitResult, shown: str, *, base_url: str, min_ttl: float, max_ttl: float
) -> DnsSource:
    srv = scheme == "dns+srv"
    host, port = _host_port(parts.netloc, shown, default_port=None)
    if parts.path not in {"", "/"}:
        raise ValueError(f"discovery URI {shown!r} has a path; a {scheme} URI names a DNS name only")
    if _is_address(host):
        raise ValueError(
            f"discovery URI {shown!r} names an address, not a DNS name; list it in instances instead"
        )
    name = host.rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"discovery URI {shown!r}: {host!r} is not a valid DNS name")
    if srv:
        if port is not None:
            raise ValueError(f"discovery URI {shown!r} has a port; SRV records give each instance's port")
        if len(labels) < 3 or not labels[0].startswith("_") or not labels[1].startswith("_"):
            raise ValueError(
                f"discovery URI {shown!r}: an SRV name reads _service._proto.domain,"
                f" e.g. {_EXAMPLES['dns+srv']}"
            )
    elif port is None:
        raise ValueError(
            f"discovery URI {shown!r} has no port; A/AAAA records need one, e.g. {_EXAMPLES['dns']}"
        )
    nameservers = _nameservers(parts.query, shown)
    base = _base(base_url, shown)
    description = f"{scheme}://{name}" + (f":{port}" if port is not None else "")
    if nameservers:
        description += "?" + "&".join(f"nameserver={_netloc(h, p)}" for h, p in nameservers)
    # Imported for a dns URI alone: dnspython is ~3 MB in every process that never uses it.
    from app.discovery.dns_source import DnsSource  # noqa: PLC0415

    return DnsSource(
        name,
        srv=srv,
        port=port,
        base_url=base,
        description=description,
        nameservers=nameservers,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
    )


def _host_port(netloc: str, shown: str, *, default_port: int | None) -> tuple[str, int | None]:
    """The host (lower case, IPv6 unbracketed) and port of ``netloc``; ``ValueError`` if either is bad."""
    if not netloc:
        raise ValueError(f"discovery URI {shown!r} has no host")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"discovery URI {shown!r}: unclosed [ in the host")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if not _is_address(host) or ":" not in host:
            raise ValueError(f"discovery URI {shown!r}: [{host}] is not an IPv6 address")
    else:
        host, sep, port_text = netloc.partition(":")
        rest = sep + port_text
        if ":" in port_text:
            raise ValueError(f"discovery URI {shown!r}: put an IPv6 address in brackets, e.g. [::1]:2379")
    if not host:
        raise ValueError(f"discovery URI {shown!r} has no host")
    if not rest:
        return host.lower(), default_port
    if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
        raise ValueError(f"discovery URI {shown!r}: port {rest[1:]!r} is not a number")
    port = int(rest[1:])
    if not 0 < port < 65536:
        raise ValueError(f"discovery URI {shown!r}: port {port} is out of range 1-65535")
    return host.lower(), port


def _nameservers(query: str, shown: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"discovery URI {shown!r}: malformed query {query!r}") from None
    for key, value in pairs:
        if key != "nameserver":
            raise ValueError(f"discovery URI {shown!r}: unknown parameter {key!r}; only nameserver is known")
        host, port = _host_port(value, shown, default_port=DNS_PORT)
        if not _is_address(host):
            raise ValueError(
                f"discovery URI {shown!r}: nameserver {value!r} must be an IP address"
                " (host, host:port or [v6]:port)"
            )
        assert port is not None  # noqa: S101 - a default port was given
        found.append((host, port))
    return found


def _base(base_url: str, shown: str) -> str:
    try:
        base = URL(base_url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"discovery URI {shown!r}: base_url is not a URL: {exc}") from None
    if base.scheme not in {"http", "https"} or not base.host:
        raise ValueError(
            f"discovery URI {shown!r}: base_url must be an absolute http(s) URL"
            " (it gives the instances' scheme and path)"
        )
    return str(base.with_query(None).with_fragment(None).with_user(None))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
