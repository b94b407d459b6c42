"""SIGHUP reloads the settings: a loop signal handler calling the store's ``reload``."""

from __future__ import annotations

import asyncio
import logging
import signal

from settings.store import ConfigStore

__all__ = ["RELOAD_SIGNAL", "install_reload_signal", "remove_reload_signal"]

log = logging.getLogger("settings.store")

#: The signal that asks for a reload, as nginx and most daemons take it.
RELOAD_SIGNAL = signal.SIGHUP


def install_reload_signal(
    store: ConfigStore, loop: asyncio.AbstractEventLoop | None = None, signum: int = RELOAD_SIGNAL
) -> bool:
    """Reload ``store`` (reason ``SIGHUP``) on each ``signum``, in ``loop`` (the running one by default).

    The reload runs as a loop callback, between tasks. False when the loop cannot take a
    signal handler (not the main thread, or a platform without them); the reason is logged.
    """
    loop = loop or asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signum, _reload, store, signal.Signals(signum).name)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        log.warning("config: cannot reload on %s: %s", signal.Signals(signum).name, exc)
        return False
    return True


def remove_reload_signal(loop: asyncio.AbstractEventLoop | None = None, signum: int = RELOAD_SIGNAL) -> None:
    """Stop reloading on ``signum``; the signal's default action (for SIGHUP, exit) is back."""
    (loop or asyncio.get_running_loop()).remove_signal_handler(signum)


def _reload(store: ConfigStore, name: str) -> None:
    store.reload(name)
