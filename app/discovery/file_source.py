"""Instances listed in a JSON file, re-read whenever its directory changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from watchfiles import awatch

from app.discovery.source import DiscoveryError

__all__ = ["FileSource"]

log = logging.getLogger("app.discovery")

#: An instances file larger than this is refused: it is a list of URLs, not a data set.
MAX_BYTES = 1 << 20
#: How long the watcher thread waits for a burst of changes to settle, and how often it
#: looks while waiting (milliseconds, watchfiles' units).
DEBOUNCE_MS = 50
STEP_MS = 10
#: The watcher wakes at least this often (ms) even when nothing was reported, and the
#: file is re-read: it closes the gap between the first read and the watcher starting,
#: and covers a change inotify never reported. Unchanged content is not yielded.
RECHECK_MS = 1000
#: How long closing waits for the watcher thread, which stops within STEP_MS of being told.
_STOP_WAIT = 5.0


class FileSource:
    """A JSON file ``{"instances": ["http://host:port/base", ...]}``, watched for changes.

    The parent directory is watched, not the file: an atomic ``mv tmp instances.json``
    replaces the file's inode, and a Kubernetes volume swaps a ``..data`` symlink next to
    it; neither touches the old file. Each change re-reads the file and an update is
    yielded only when its content (or the error it gives) differs from the last one.
    """

    kind = "file"

    def __init__(self, path: Path, *, force_polling: bool | None = None) -> None:
        if not path.is_absolute():
            raise ValueError(f"the instances file must be an absolute path, not {str(path)!r}")
        self.path = path
        self.description = path.as_uri()
        self._force_polling = force_polling
        self._state: str | None = None

    def initial(self) -> tuple[str, ...] | None:
        """The instances the file lists now; ``DiscoveryError`` if it is missing, unreadable or invalid."""
        state, result = self._read()
        self._state = state
        if isinstance(result, DiscoveryError):
            raise result
        return result

    def refresh(self) -> None:
        """Nothing to do: a change to the file is seen as it happens."""

    async def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        """The file's instances now, then again each time its content changes."""
        state, result = self._read()
        self._state = state
        yield result
        while True:
            # Closed explicitly when this generator is, so the watcher thread stops now.
            async with contextlib.aclosing(self._changes()) as changes:
                async for _ in changes:
                    state, result = self._read()
                    if state != self._state:
                        self._state = state
                        yield result
            # The watcher ended (its directory went away): say so, wait, and watch again.
            state, result = self._read()
            if state != self._state:
                self._state = state
                yield result
            await asyncio.sleep(RECHECK_MS / 1000)

    async def _changes(self) -> AsyncGenerator[None, None]:
        """One item per batch of changes in the directory, and one per quiet RECHECK_MS."""
        parent = self.path.parent
        if not parent.is_dir():
            return
        stop = asyncio.Event()
        wake = asyncio.Event()
        # awatch waits in a worker thread that ignores cancellation until it returns, so
        # it runs in a task of its own: this generator can be closed at once, and the
        # thread is told to stop through ``stop`` (it looks every STEP_MS).
        pump = asyncio.get_running_loop().create_task(self._pump(parent, stop, wake), name="discovery:file")
        pump.add_done_callback(lambda _: wake.set())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if pump.done():
                    if not pump.cancelled() and (exc := pump.exception()) is not None:
                        log.warning("discovery: watching %s failed: %s", parent, exc)
                    return
                yield None
        finally:
            stop.set()
            done, _ = await asyncio.wait({pump}, timeout=_STOP_WAIT)
            if not done:
                pump.cancel()
                await asyncio.wait({pump})
            if not pump.cancelled():
                pump.exception()  # retrieved, so asyncio does not report it as never retrieved

    async def _pump(self, parent: Path, stop: asyncio.Event, wake: asyncio.Event) -> None:
        async for _ in awatch(
            parent,
            watch_filter=None,  # any change may be the one: the content hash decides
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=RECHECK_MS,
            yield_on_timeout=True,
            recursive=False,
            force_polling=self._force_polling,
        ):
            wake.set()

    def _read(self) -> tuple[str, tuple[str, ...] | DiscoveryError]:
        """A key for what was read (content hash, or the error), and the instances or the error."""
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return self._error("does not exist")
        except OSError as exc:
            return self._error(f"cannot be read: {exc.strerror or exc}")
        state = "sha256:" + hashlib.sha256(raw).hexdigest()
        if len(raw) > MAX_BYTES:
            return state, DiscoveryError(f"{self.path}: larger than {MAX_BYTES} bytes")
        try:
            document: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return state, DiscoveryError(f"{self.path}: not valid JSON: {exc}")
        instances = document.get("instances") if isinstance(document, dict) else None
        if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
            return state, DiscoveryError(
                f'{self.path}: expected {{"instances": ["http://host:port/base", ...]}}'
                " (an object whose instances is a list of URL strings)"
            )
        return state, tuple(instances)

    def _error(self, what: str) -> tuple[str, DiscoveryError]:
        message = f"{self.path}: {what}"
        return "error:" + message, DiscoveryError(message)
