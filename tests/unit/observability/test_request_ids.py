"""Request ids: 32 hex characters, unique in a process, a new prefix in a forked child."""

from __future__ import annotations

import os
import re

import pytest

from app.observability import new_request_id


def test_ids_are_32_hex_and_unique() -> None:
    """10,000 ids: each 32 lower-case hex characters, none repeated."""
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
# Python 3.12+ warns about fork() with threads running; the child only writes and exits.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_another_prefix() -> None:
    """A child forked after ids were made draws from a fresh random prefix, so it never repeats the parent's."""
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its first id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != parent[:16]
