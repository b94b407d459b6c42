"""The contract every discovery source meets, and the error an unusable update is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["DiscoveryError", "DiscoverySource"]


class DiscoveryError(Exception):
    """An update that cannot be used (unreadable, invalid, empty); the last good set stays."""


class DiscoverySource(Protocol):
    """Where one upstream's instances come from: a file, DNS records or an etcd prefix.

    ``kind`` is a metric and log label (``file``, ``dns`` or ``etcd``); ``description``
    names the source for people and never carries a secret.
    """

    kind: str
    description: str

    def initial(self) -> tuple[str, ...] | None:
        """The current set, read synchronously when that is cheap (a file); None when it needs the loop.

        Raises ``DiscoveryError`` when the source can be read but what it holds is unusable.
        """
        ...

    def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        """The full current set each time it may have changed, or a ``DiscoveryError`` (yielded, not raised).

        The first item is the current set. Runs until cancelled or closed, reconnecting
        by itself, and releases what it holds (sessions, watcher threads) when it stops.
        """
        ...

    def refresh(self) -> None:
        """Ask for an early re-resolve (every instance failed); a no-op for sources that are pushed to."""
        ...
