"""Request ids: unique and unguessable enough to correlate, made without a system call each."""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["new_request_id"]

#: Where each process's counter starts: from 2**60, ``hex()`` gives exactly 16 digits for
#: the next 2**64 - 2**60 ids (more than any process makes), so no format spec or mask per id.
_FIRST = 1 << 60
_prefix = ""
_counter = itertools.count(_FIRST)


def _reseed() -> None:
    """A fresh random prefix (and counter): at import, and in a forked child, so ids never repeat."""
    global _prefix, _counter  # noqa: PLW0603 - the process's one id source
    _prefix = secrets.token_hex(8)
    _counter = itertools.count(_FIRST)


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """32 hex characters: a random 64-bit prefix per process, then a 64-bit counter.

    ``secrets.token_hex`` per call costs a ``getrandom`` system call on every request;
    this costs a counter step and a format. Ids are unique per process (and across
    processes with overwhelming probability); they identify, they do not authenticate.
    """
    return _prefix + hex(next(_counter))[2:]
