"""Instances listed in a JSON file, re-read whenever its directory changes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.discovery.source import DiscoveryError
from app.discovery.watch import FileRead, read_file, watch_file

__all__ = ["FileSource"]

#: An instances file larger than this is refused: it is a list of URLs, not a data set.
MAX_BYTES = 1 << 20


class FileSource:
    """A JSON file ``{"instances": ["http://host:port/base", ...]}``, watched for changes.

    The parent directory is watched, not the file (see ``watch_file``): an atomic rename
    and a Kubernetes ``..data`` symlink swap are both seen. An update is yielded only when
    the file's content (or the error it gives) differs from the last one.
    """

    kind = "file"

    def __init__(self, path: Path, *, force_polling: bool | None = None) -> None:
        if not path.is_absolute():
            raise ValueError(f"the instances file must be an absolute path, not {str(path)!r}")
        self.path = path
        self.description = path.as_uri()
        self._force_polling = force_polling

    def initial(self) -> tuple[str, ...] | None:
        """The instances the file lists now; ``DiscoveryError`` if it is missing, unreadable or invalid."""
        result = self._parse(read_file(self.path, MAX_BYTES))
        if isinstance(result, DiscoveryError):
            raise result
        return result

    def refresh(self) -> None:
        """Nothing to do: a change to the file is seen as it happens."""

    async def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        """The file's instances now, then again each time its content changes."""
        first = read_file(self.path, MAX_BYTES)
        yield self._parse(first)
        watch = watch_file(
            self.path,
            max_bytes=MAX_BYTES,
            since=first.digest,
            force_polling=self._force_polling,
            name="discovery:file",
        )
        # Closed explicitly when this generator is, so the watcher thread stops now.
        async with contextlib.aclosing(watch) as reads:
            async for read in reads:
                yield self._parse(read)

    def _parse(self, read: FileRead) -> tuple[str, ...] | DiscoveryError:
        """The instances the read holds, or the error naming the file and what is wrong."""
        if read.data is None:
            return DiscoveryError(f"{self.path}: {read.error}")
        try:
            document: Any = json.loads(read.data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return DiscoveryError(f"{self.path}: not valid JSON: {exc}")
        instances = document.get("instances") if isinstance(document, dict) else None
        if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
            return DiscoveryError(
                f'{self.path}: expected {{"instances": ["http://host:port/base", ...]}}'
                " (an object whose instances is a list of URL strings)"
            )
        return tuple(instances)
