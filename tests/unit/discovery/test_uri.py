"""parse_discovery builds the source a URI names, and refuses a malformed one with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.discovery import DnsSource, EtcdSource, FileSource, parse_discovery
from app.discovery.etcd_source import prefix_range_end

BASE = "http://ignored:1/api/v1/"


def test_a_file_uri_names_an_absolute_path() -> None:
    """file:///abs/path is a FileSource on that path; percent-escapes are decoded."""
    source = parse_discovery("file:///etc/app/my%20instances.json", BASE)
    assert isinstance(source, FileSource)
    assert source.kind == "file"
    assert source.path == Path("/etc/app/my instances.json")
    assert source.description == "file:///etc/app/my%20instances.json"


def test_parsing_opens_nothing(tmp_path) -> None:
    """A file that does not exist parses: the URI is checked, not the file (config validation runs before files appear)."""
    source = parse_discovery(f"file://{tmp_path}/absent/instances.json", BASE)
    assert isinstance(source, FileSource)


@pytest.mark.parametrize(
    ("uri", "kind", "description"),
    [
        ("dns+srv://_ae._tcp.test.local", "dns", "dns+srv://_ae._tcp.test.local"),
        ("DNS+SRV://_AE._tcp.Test.Local.", "dns", "dns+srv://_ae._tcp.test.local"),
        (
            "dns+srv://_ae._tcp.test.local?nameserver=127.0.0.1:5353",
            "dns",
            "dns+srv://_ae._tcp.test.local?nameserver=127.0.0.1:5353",
        ),
        (
            "dns://ae.test.local:9001?nameserver=[::1]:53&nameserver=10.0.0.1",
            "dns",
            "dns://ae.test.local:9001?nameserver=[::1]:53&nameserver=10.0.0.1:53",
        ),
        ("etcd://127.0.0.1:2379/services/ae/", "etcd", "etcd://127.0.0.1:2379/services/ae/"),
        ("etcd://etcd.internal/ae", "etcd", "etcd://etcd.internal:2379/ae"),
        ("etcd://[::1]:2379/ae", "etcd", "etcd://[::1]:2379/ae"),
    ],
)
def test_accepted_uris(uri, kind, description) -> None:
    """Each accepted URI gives a source of its kind, with a description that names it plainly."""
    source = parse_discovery(uri, BASE)
    assert source.kind == kind
    assert source.description == description
    assert isinstance(source, DnsSource if kind == "dns" else EtcdSource)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("instances.json", "no scheme"),
        ("http://10.0.0.1:9001/", "scheme 'http'"),
        ("consul://x/ae", "scheme 'consul'"),
        ("file://host/etc/instances.json", "names host 'host'"),
        ("file://instances.json", "names host"),
        ("file:relative/instances.json", "relative path"),
        ("file:///etc/app/", "names a directory"),
        ("file:///etc/app/instances.json?x=1", "takes none"),
        ("file:///etc/app/instances.json#x", "fragment"),
        ("dns+srv://", "no host"),
        ("dns+srv://_ae._tcp.test.local:53", "SRV records give each instance's port"),
        ("dns+srv://ae.test.local", "_service._proto.domain"),
        ("dns+srv://_ae._tcp.test.local/path", "has a path"),
        ("dns+srv://_ae._tcp.bad..name", "not a valid DNS name"),
        ("dns+srv://_ae._tcp.test.local?nameserver=resolver.local", "must be an IP address"),
        ("dns+srv://_ae._tcp.test.local?nameserver=127.0.0.1:99999", "out of range"),
        ("dns+srv://_ae._tcp.test.local?nameserver=::1", "IPv6 address in brackets"),
        ("dns+srv://_ae._tcp.test.local?timeout=3", "unknown parameter 'timeout'"),
        ("dns://ae.test.local", "no port"),
        ("dns://ae.test.local:http", "not a number"),
        ("dns://ae.test.local:0", "out of range"),
        ("dns://10.0.0.1:9001", "names an address"),
        ("etcd://127.0.0.1:2379", "no key prefix"),
        ("etcd://127.0.0.1:2379/", "no key prefix"),
        ("etcd:///ae", "no host"),
        ("etcd://127.0.0.1:2379/ae?x=1", "takes none"),
        ("etcd://[::1/ae", "malformed"),
        ("etcd://[zz]:2379/ae", "IPv4 or IPv6 address"),
        ("dns://ae.test.local:9001 ", "whitespace"),
    ],
)
def test_refused_uris_say_why(uri, reason) -> None:
    """A malformed URI is a ValueError whose message says what is wrong."""
    with pytest.raises(ValueError, match="discovery") as raised:
        parse_discovery(uri, BASE)
    assert reason in str(raised.value)


def test_credentials_are_refused_and_not_echoed() -> None:
    """A user:password@ in a URI is refused, and the password is not repeated in the message."""
    with pytest.raises(ValueError, match="credentials") as raised:
        parse_discovery("etcd://root:hunter22@127.0.0.1:2379/ae", BASE)
    assert "hunter22" not in str(raised.value)


@pytest.mark.parametrize("base", ["/api/v1/", "ftp://x/", "not a url"])
def test_dns_needs_an_absolute_http_base_url(base) -> None:
    """DNS gives addresses and ports only: the scheme and path come from base_url, which must be absolute http(s)."""
    with pytest.raises(ValueError, match="base_url"):
        parse_discovery("dns+srv://_ae._tcp.test.local", base)


@pytest.mark.parametrize(("low", "high"), [(0, 10), (-1, 10), (5, 1), (float("nan"), 1), (1, float("inf"))])
def test_ttl_bounds_are_checked(low, high) -> None:
    """min_ttl must be positive and not above max_ttl, both finite."""
    with pytest.raises(ValueError, match="min_ttl"):
        parse_discovery("dns+srv://_ae._tcp.test.local", BASE, min_ttl=low, max_ttl=high)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/ae/", b"/ae0"), (b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", b"\0")],
)
def test_the_range_end_of_a_prefix(prefix, end) -> None:
    """range_end is the prefix with its last byte below 0xff incremented (etcd's GetPrefixRangeEnd)."""
    assert prefix_range_end(prefix) == end
