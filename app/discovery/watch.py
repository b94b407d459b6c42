"""Watching one file: its directory is watched, and a read is yielded only when the content changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEBOUNCE_MS", "FileRead", "RECHECK_MS", "STEP_MS", "read_file", "watch_file"]

log = logging.getLogger(__name__)

#: How long the watcher thread groups a burst of changes (by default), and how often it
#: looks while waiting (milliseconds, watchfiles' units).
DEBOUNCE_MS = 50
STEP_MS = 10
#: The watcher wakes at least this often (ms) even when nothing was reported, and the
#: file is re-read: it closes the gap between the first read and the watcher starting,
#: and covers a change inotify never reported. Unchanged content is not yielded.
RECHECK_MS = 1000
#: How long closing waits for the watcher thread, which stops within STEP_MS of being told.
_STOP_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class FileRead:
    """One read of a file: its digest, and its bytes or why there are none."""

    #: ``sha256:<hex>`` of the bytes read, or ``error:<what>``: equal digests, same read.
    digest: str
    #: The whole content; None when the file is missing, unreadable or too large.
    data: bytes | None
    #: Why ``data`` is None ("does not exist", "cannot be read: ...", "larger than N bytes").
    error: str | None


def read_file(path: Path, max_bytes: int) -> FileRead:
    """``path`` read once (through any symlinks), with the digest of what was read."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        return FileRead("error:does not exist", None, "does not exist")
    except OSError as exc:
        what = f"cannot be read: {exc.strerror or exc}"
        return FileRead("error:" + what, None, what)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if len(raw) > max_bytes:
        return FileRead(digest, None, f"larger than {max_bytes} bytes")
    return FileRead(digest, raw, None)


async def watch_file(
    path: Path,
    *,
    max_bytes: int,
    since: str | None = None,
    settle_seconds: float = 0.0,
    settle_rounds: int = 20,
    debounce_ms: int = DEBOUNCE_MS,
    recheck_ms: int = RECHECK_MS,
    force_polling: bool | None = None,
    name: str = "watch:file",
) -> AsyncGenerator[FileRead, None]:
    """Each read of ``path`` whose digest differs from the last one yielded (or from ``since``).

    The parent directory is watched, not the file: an atomic ``mv tmp file`` replaces the
    file's inode, and a Kubernetes volume swaps a ``..data`` symlink next to it; neither
    touches the old file. Any change in the directory, and every quiet ``recheck_ms``,
    re-reads the file; only a new digest is yielded. watchfiles groups a burst of changes
    for up to ``debounce_ms``. With ``settle_seconds``, a changed file is read again that
    much later until two reads agree (at most ``settle_rounds`` times), so a writer caught
    half way is not yielded. If the directory goes away the watch starts again after
    ``recheck_ms``. Runs until closed or cancelled; closing it stops the watcher thread.
    """
    last = since
    while True:
        # Closed explicitly when this generator is, so the watcher thread stops now.
        async with contextlib.aclosing(
            _changes(path.parent, debounce_ms, recheck_ms, force_polling, name)
        ) as changes:
            async for _ in changes:
                read = await _settled(path, max_bytes, last, settle_seconds, settle_rounds)
                if read.digest != last:
                    last = read.digest
                    yield read
        # The watcher ended (its directory went away): read, wait, and watch again.
        read = read_file(path, max_bytes)
        if read.digest != last:
            last = read.digest
            yield read
        await asyncio.sleep(recheck_ms / 1000)


async def _settled(path: Path, max_bytes: int, last: str | None, seconds: float, rounds: int) -> FileRead:
    """The file's content once two reads ``seconds`` apart agree (or after ``rounds`` tries)."""
    read = read_file(path, max_bytes)
    if seconds <= 0 or read.digest == last:
        return read
    for _ in range(rounds):
        await asyncio.sleep(seconds)
        again = read_file(path, max_bytes)
        if again.digest == read.digest:
            break
        read = again
    return read


async def _changes(
    parent: Path, debounce_ms: int, recheck_ms: int, force_polling: bool | None, name: str
) -> AsyncGenerator[None, None]:
    """One item per batch of changes in the directory, and one per quiet ``recheck_ms``."""
    if not _is_dir(parent):
        return
    stop = asyncio.Event()
    wake = asyncio.Event()
    # awatch waits in a worker thread that ignores cancellation until it returns, so
    # it runs in a task of its own: this generator can be closed at once, and the
    # thread is told to stop through ``stop`` (it looks every STEP_MS).
    pump = asyncio.get_running_loop().create_task(
        _pump(
            parent,
            debounce_ms=debounce_ms,
            recheck_ms=recheck_ms,
            force_polling=force_polling,
            stop=stop,
            wake=wake,
        ),
        name=name,
    )
    pump.add_done_callback(lambda _: wake.set())
    try:
        while True:
            await wake.wait()
            wake.clear()
            if pump.done():
                if not pump.cancelled() and (exc := pump.exception()) is not None:
                    log.warning("watching %s failed: %s", parent, exc)
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


def _is_dir(path: Path) -> bool:
    # One stat, as cheap as the reads around it; not worth a thread.
    return path.is_dir()


async def _pump(
    parent: Path,
    *,
    debounce_ms: int,
    recheck_ms: int,
    force_polling: bool | None,
    stop: asyncio.Event,
    wake: asyncio.Event,
) -> None:
    # Imported when a file is watched: watchfiles and anyio are ~1.5 MB in every process otherwise.
    from watchfiles import awatch  # noqa: PLC0415

    async for _ in awatch(
        parent,
        watch_filter=None,  # any change may be the one: the content digest decides
        debounce=debounce_ms,
        step=STEP_MS,
        stop_event=stop,
        rust_timeout=recheck_ms,
        yield_on_timeout=True,
        recursive=False,
        force_polling=force_polling,
    ):
        wake.set()
