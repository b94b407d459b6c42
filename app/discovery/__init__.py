"""Discovery: where an upstream's instances come from (a file, DNS, etcd) and the last good set of them."""

from typing import TYPE_CHECKING, Any

from app.discovery.etcd_source import EtcdSource
from app.discovery.file_source import FileSource
from app.discovery.instances import normalise_instance, normalise_instances
from app.discovery.metrics import DiscoveryFamilies, discovery_families
from app.discovery.runner import DiscoveryRunner
from app.discovery.source import DiscoveryError, DiscoverySource
from app.discovery.uri import SCHEMES, parse_discovery
from app.discovery.watch import FileRead, read_file, watch_file

if TYPE_CHECKING:
    from app.discovery.dns_source import DnsSource

__all__ = [
    "DiscoveryError",
    "DiscoveryFamilies",
    "DiscoveryRunner",
    "DiscoverySource",
    "DnsSource",
    "EtcdSource",
    "FileRead",
    "FileSource",
    "SCHEMES",
    "discovery_families",
    "normalise_instance",
    "normalise_instances",
    "parse_discovery",
    "read_file",
    "watch_file",
]


def __getattr__(name: str) -> Any:
    """``DnsSource`` on first use: dnspython costs ~3 MB, which a process without DNS discovery never pays."""
    if name == "DnsSource":
        from app.discovery.dns_source import DnsSource  # noqa: PLC0415

        return DnsSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
