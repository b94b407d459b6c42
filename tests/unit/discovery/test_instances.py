"""An instance is an absolute http(s) base URL, normalised to end in exactly one slash."""

from __future__ import annotations

import pytest

from app.discovery import DiscoveryError, normalise_instance, normalise_instances


@pytest.mark.parametrize(
    ("entry", "normal"),
    [
        ("http://10.0.0.1:9001/api/v1", "http://10.0.0.1:9001/api/v1/"),
        ("http://10.0.0.1:9001/api/v1///", "http://10.0.0.1:9001/api/v1/"),
        ("HTTPS://Svc.Example:443/", "https://svc.example/"),
        ("http://[::1]:9001", "http://[::1]:9001/"),
        ("http://ae_1.internal:80/x", "http://ae_1.internal/x/"),
    ],
)
def test_valid_entries_are_normalised(entry, normal) -> None:
    """Scheme and host lower-cased, default port dropped, exactly one trailing slash."""
    assert normalise_instance(entry) == normal


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (42, "not a URL string"),
        ("", "empty"),
        (" http://10.0.0.1/", "whitespace"),
        ("http://a b/", "whitespace"),
        ("/api/v1", "absolute"),
        ("10.0.0.1:9001", "absolute"),
        ("ftp://10.0.0.1/", "absolute http"),
        ("http://10.0.0.1:99999/", "not a URL"),
        ("http://10.0.0.1:0/", "port 0"),
        ("http://10.0.0.1/?a=1", "query or fragment"),
        ("http://10.0.0.1/#a", "query or fragment"),
        ("http://user@10.0.0.1/", "credentials"),
        ("http://a..b/", "no valid host"),
        ("http:///path", "absolute"),
    ],
)
def test_invalid_entries_are_refused(entry, reason) -> None:
    """Anything but an absolute http(s) URL with a host and no query, fragment or credentials is a DiscoveryError."""
    with pytest.raises(DiscoveryError) as raised:
        normalise_instance(entry)
    assert reason in str(raised.value)


def test_a_set_is_deduplicated_in_order_and_never_empty() -> None:
    """Duplicates after normalising drop (first kept); an empty set is refused."""
    assert normalise_instances(["http://b/", "http://a", "http://B:80/"]) == ("http://b/", "http://a/")
    with pytest.raises(DiscoveryError, match="no instances"):
        normalise_instances([])


@pytest.mark.parametrize(
    "entry",
    [
        "http://svc:hunter2@10.0.0.5:9001/api/v1\n",  # a trailing newline from `etcdctl put k "$(cat f)"`
        "http://svc:hunter2@10.0.0.5:99999/api/v1",  # a bad port
        "http://svc:hunter2@10.0.0.5:9001/api/v1",
        "ftp://svc:hunter2@10.0.0.5/",
    ],
)
def test_no_rejected_entry_shows_its_credentials(entry: str) -> None:
    with pytest.raises(DiscoveryError) as info:
        normalise_instance(entry)
    assert "hunter2" not in str(info.value)
