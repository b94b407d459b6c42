"""What goes on the wire for one request: its head, serialised as aiohttp would send it."""

from __future__ import annotations

from collections.abc import Mapping

from yarl import URL

__all__ = ["request_head"]

# aiohttp's GET_METHODS. Every other method gets "Content-Length: 0" when it has no body,
# as aiohttp sends it: for POST, PUT and PATCH an upstream behind a strict proxy may insist
# on it; for DELETE (and any other method) it is parity with aiohttp alone, which RFC 9110
# §8.6 allows (a SHOULD NOT, not a MUST NOT). aiohttp also adds "Content-Type:
# application/octet-stream" to a body-less POST, PUT or PATCH; that is not copied.
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Headers the transport writes itself unless the call gave its own.
_OWN = frozenset({"host", "user-agent", "content-length"})


def request_head(
    method: str, url: URL, headers: Mapping[str, str], body: bytes | None, user_agent: str
) -> bytes:
    """The request line and headers, ready to write; ``body`` (if any) follows it as is.

    Header names and values were vetted before (outbound.py refuses CR, LF and control
    characters), so they are written as given, UTF-8 encoded as aiohttp does.
    """
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1\r\n"]
    given = 0
    for name, value in headers.items():
        if len(name) <= 14 and name.lower() in _OWN:  # cheap length test first: the hot path
            given += 1
            if name.lower() == "content-length":
                continue  # the body's real length below, never the caller's idea of it
        lines.append(f"{name}: {value}\r\n")
    if given == 0 or not any(n.lower() == "host" for n in headers):
        lines.append(f"Host: {url.host_port_subcomponent}\r\n")
    if given == 0 or not any(n.lower() == "user-agent" for n in headers):
        lines.append(f"User-Agent: {user_agent}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method not in _BODYLESS_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")
