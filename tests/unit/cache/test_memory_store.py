"""The memory store: LRU bounded in bytes, refusal of oversized entries, counters, thread safety."""

from __future__ import annotations

import threading

import pytest

from app.cache import MemoryStore, cache_key

from .helpers import entry


def sized(total: int):
    """An entry charged exactly ``total`` bytes under a one-digit ``key`` (headers and key count too)."""
    base = MemoryStore.cost(key(1), entry({}, body=b""))
    return entry({}, body=b"x" * (total - base))


def key(n: int):
    return cache_key("GET", f"http://h/{n}", "scope")


def test_size_counts_body_and_headers() -> None:
    """An entry's size grows with its body and with its header names and values."""
    small = entry({}, body=b"")
    assert entry({}, body=b"12345").size == small.size + 5
    assert entry({"X-A": "abc"}, body=b"").size == small.size + len("x-a") + len("abc") + 4


def test_the_least_recently_used_entry_is_evicted_by_bytes() -> None:
    """Three 1000-byte entries in a 2500-byte store: the one not read lately goes."""
    store = MemoryStore(max_bytes=2500)
    assert store.put(key(1), sized(1000))
    assert store.put(key(2), sized(1000))
    assert store.get(key(1)) is not None  # 1 is now more recent than 2
    assert store.put(key(3), sized(1000))
    assert key(2) not in store
    assert key(1) in store
    assert key(3) in store
    stats = store.stats()
    assert (stats.evictions, stats.bytes, stats.entries) == (1, 2000, 2)


def test_one_large_entry_evicts_as_many_as_needed() -> None:
    """A 2000-byte entry in a full 2500-byte store evicts two 1000-byte ones."""
    store = MemoryStore(max_bytes=2500)
    store.put(key(1), sized(1000))
    store.put(key(2), sized(1000))
    store.put(key(3), sized(2000))
    assert len(store) == 1
    assert store.stats().evictions == 2
    assert store.stats().bytes == 2000


def test_an_entry_larger_than_the_bound_is_refused_and_evicts_nothing() -> None:
    """Refused, counted, and the store keeps what it had."""
    store = MemoryStore(max_bytes=2500)
    store.put(key(1), sized(1000))
    assert not store.put(key(2), sized(2510))
    stats = store.stats()
    assert (stats.refused, stats.entries, stats.evictions, stats.bytes) == (1, 1, 0, 1000)


def test_replacing_a_key_accounts_bytes_once() -> None:
    """A new entry under an existing key replaces it: bytes are the new size only."""
    store = MemoryStore(max_bytes=10000)
    store.put(key(1), sized(1000))
    store.put(key(1), sized(3000))
    assert store.stats().bytes == 3000
    assert len(store) == 1


def test_hits_misses_delete_and_clear() -> None:
    """Counters follow the reads; delete and clear give the bytes back."""
    store = MemoryStore(max_bytes=10_000)
    stored = sized(1000)
    store.put(key(1), stored)
    assert store.get(key(1)) is stored
    assert store.get(key(2)) is None
    assert store.delete(key(1))
    assert not store.delete(key(1))
    store.put(key(3), sized(1000))
    store.clear()
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.bytes, stats.entries) == (1, 1, 0, 0)


def test_a_long_key_counts_against_the_bound() -> None:
    """Small answers under long query strings: the keys' bytes count, so the store stays bounded."""
    store = MemoryStore(max_bytes=64 * 1024)
    for n in range(200):
        store.put(cache_key("GET", f"http://h/p?q={n}&pad={'x' * 6000}", "scope"), entry({}, body=b"{}"))
    stats = store.stats()
    assert stats.entries <= 64 * 1024 // 6000
    assert stats.bytes <= 64 * 1024


def test_scopes_do_not_share_entries() -> None:
    """The same URL under another credential scope is a miss."""
    store = MemoryStore(max_bytes=10_000)
    store.put(cache_key("GET", "http://h/p", "a"), sized(1000))
    assert store.get(cache_key("GET", "http://h/p", "b")) is None


def test_a_non_positive_bound_is_refused() -> None:
    """max_bytes must be positive."""
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryStore(max_bytes=0)


def test_concurrent_threads_keep_the_byte_count_exact() -> None:
    """Eight threads putting and getting: bytes equal the sum of what stays, never above the bound."""
    store = MemoryStore(max_bytes=10_000)
    entries = [sized(300 + n) for n in range(50)]

    def work(offset: int) -> None:
        for round_ in range(200):
            n = (offset + round_) % 50
            store.put(key(n), entries[n])
            store.get(key((n * 7) % 50))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = store.stats()
    kept = [n for n in range(50) if key(n) in store]
    assert stats.bytes == sum(MemoryStore.cost(key(n), entries[n]) for n in kept)
    assert stats.bytes <= 10_000
    assert stats.hits + stats.misses == 8 * 200
