"""Instances stored under an etcd v3 key prefix, followed through the JSON gateway's watch stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from app.discovery.source import DiscoveryError

__all__ = ["EtcdSource", "prefix_range_end"]

#: Reconnect delays after an error: doubling from the first to the last.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
#: A watch that stayed up this long was healthy: its failure starts the backoff afresh.
_HEALTHY_AFTER = 10.0
#: Seconds a range read may take, and to connect for the watch.
REQUEST_TIMEOUT = 5.0
#: A watch message longer than this is refused (a batch of events, not a data set).
_MAX_LINE = 16 << 20


class _EtcdError(Exception):
    """etcd answered, but not with what was asked for."""


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's ``GetPrefixRangeEnd``)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key from ``prefix`` on
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class EtcdSource:
    """Every value under ``prefix`` is one instance URL; the set is re-read on each watch event.

    One range read, then a watch from the next revision, so no change between the two is
    lost. On any error (refused connection, ended stream, compaction) the error is
    yielded, and after a backoff the source reconnects and reads the range again.
    """

    kind = "etcd"

    def __init__(self, endpoint: str, prefix: bytes, *, description: str) -> None:
        if not prefix:
            raise ValueError("an etcd prefix must not be empty")
        self.description = description
        self._endpoint = URL(endpoint)
        self._range = {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}

    def initial(self) -> tuple[str, ...] | None:
        """None: reading etcd needs the loop."""
        return None

    def refresh(self) -> None:
        """Nothing to do: etcd pushes each change through the watch."""

    async def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        """The set under the prefix now, then again after each change; errors yielded, then reconnects."""
        delay = BACKOFF_MIN
        # total=None: the watch stream is meant to stay open; each range read has its own limit.
        timeout = aiohttp.ClientTimeout(total=None, connect=REQUEST_TIMEOUT, sock_connect=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            while True:
                started = time.monotonic()
                try:
                    async with contextlib.aclosing(self._follow(session)) as follow:
                        async for item in follow:
                            yield item
                    error = DiscoveryError(f"{self.description}: the watch stream ended")
                except (aiohttp.ClientError, OSError, TimeoutError, _EtcdError) as exc:
                    error = DiscoveryError(f"{self.description}: {_reason(exc)}")
                if time.monotonic() - started > _HEALTHY_AFTER:
                    delay = BACKOFF_MIN
                yield error
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _follow(self, session: aiohttp.ClientSession) -> AsyncGenerator[tuple[str, ...], None]:
        """The set now, then once per batch of watch events; returns when the stream ends."""
        instances, revision = await self._read(session)
        yield instances
        request = {"create_request": {**self._range, "start_revision": str(revision + 1)}}
        async with session.post(self._endpoint / "v3" / "watch", json=request) as response:
            await _check(response, "watch")
            async with contextlib.aclosing(_messages(response)) as messages:
                async for message in messages:
                    if "error" in message:
                        raise _EtcdError(f"watch error: {_message_text(message['error'])}")
                    result = message.get("result") or {}
                    if result.get("canceled"):
                        compacted = result.get("compact_revision")
                        why = (
                            f"compacted at revision {compacted}"
                            if compacted
                            else result.get("cancel_reason", "")
                        )
                        raise _EtcdError(f"the watch was canceled: {why or 'no reason given'}")
                    if result.get("events"):
                        # Re-reading the range is simpler than applying events, and cannot drift.
                        instances, _ = await self._read(session)
                        yield instances

    async def _read(self, session: aiohttp.ClientSession) -> tuple[tuple[str, ...], int]:
        """The values under the prefix (in key order) and the store's revision."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            async with session.post(self._endpoint / "v3" / "kv" / "range", json=self._range) as response:
                await _check(response, "range")
                body: Any = await response.json(content_type=None)
        try:
            revision = int(body["header"]["revision"])
            values = [base64.b64decode(kv.get("value", ""), validate=True) for kv in body.get("kvs", [])]
            return tuple(v.decode("utf-8") for v in values), revision
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _EtcdError(f"unexpected range answer: {type(exc).__name__}: {exc}") from None


async def _check(response: aiohttp.ClientResponse, what: str) -> None:
    if response.status != 200:
        text = (await response.content.read(500)).decode("utf-8", "replace")
        raise _EtcdError(f"{what} answered HTTP {response.status}: {text.strip()}")


async def _messages(response: aiohttp.ClientResponse) -> AsyncGenerator[dict[str, Any], None]:
    """The stream's JSON objects, one a line (split here: aiohttp's line reader caps lines at 64 KiB)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            if line.strip():
                yield _decode(line)
        if len(buffer) > _MAX_LINE:
            raise _EtcdError(f"a watch message is longer than {_MAX_LINE} bytes")
    if buffer.strip():
        yield _decode(buffer)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise _EtcdError(f"the watch sent something that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise _EtcdError("the watch sent JSON that is not an object")
    return message


def _message_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _EtcdError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
