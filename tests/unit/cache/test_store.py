"""The CacheStore protocol through the memory store (ttl expiry, refusals), and the Redis store's value format."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry

from app.cache import CacheStore, MemoryStore, RedisStore, cache_key
from app.cache.redis_store import ENTRY_MAGIC, CorruptEntry, decode_entry, encode_entry
from app.state import SharedState, SharedStateSettings
from tests.support.manual_clock import ManualClock

from .helpers import T0, entry

KEY = cache_key("GET", "http://h/p", "scope")


def test_both_stores_satisfy_the_protocol() -> None:
    """MemoryStore and RedisStore are CacheStores (structurally), and say which kind they are."""
    memory = MemoryStore(max_bytes=1000)
    assert isinstance(memory, CacheStore)
    assert memory.kind == "memory"
    state = SharedState(SharedStateSettings(url="redis://127.0.0.1:1/0"), registry=CollectorRegistry())
    redis = RedisStore(state, "svc", max_bytes=1000)
    assert isinstance(redis, CacheStore)
    assert redis.kind == "redis"


async def test_save_load_remove_through_the_protocol() -> None:
    """What is saved loads back as the same entry; after remove it is a miss; counters follow."""
    store: CacheStore = MemoryStore(max_bytes=10_000)
    stored = entry({"ETag": '"v1"'}, body=b"hello")
    assert await store.load(KEY) is None
    assert await store.save(KEY, stored, ttl=60)
    assert await store.load(KEY) is stored
    await store.remove(KEY)
    assert await store.load(KEY) is None
    await store.remove(KEY)  # removing a missing key is harmless
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes, stats.failures) == (1, 2, 0, 0, 0)


async def test_an_entry_past_its_ttl_is_a_miss_and_is_dropped() -> None:
    """On the store's clock: a hit until ttl seconds have passed, then a miss that gives the bytes back."""
    clock = ManualClock()
    store = MemoryStore(max_bytes=10_000, clock=clock)
    stored = entry({}, body=b"x" * 100)
    assert await store.save(KEY, stored, ttl=10)
    await clock.advance(9.999)
    assert await store.load(KEY) is stored
    assert KEY in store
    await clock.advance(0.001)
    assert KEY not in store  # expired, though not dropped until read
    assert await store.load(KEY) is None
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.expired, stats.entries, stats.bytes) == (1, 1, 1, 0, 0)


async def test_a_new_save_resets_the_expiry_and_put_keeps_forever() -> None:
    """Saving again under a key sets a new ttl; the sync put (no ttl) never expires."""
    clock = ManualClock()
    store = MemoryStore(max_bytes=10_000, clock=clock)
    first, second = entry({}, body=b"1"), entry({}, body=b"2")
    await store.save(KEY, first, ttl=5)
    await clock.advance(4)
    await store.save(KEY, second, ttl=5)
    await clock.advance(4)
    assert await store.load(KEY) is second
    other = cache_key("GET", "http://h/other", "scope")
    assert store.put(other, first)
    await store.save(cache_key("GET", "http://h/inf", "scope"), first, ttl=math.inf)
    await clock.advance(10**9)
    assert store.get(other) is first
    assert await store.load(cache_key("GET", "http://h/inf", "scope")) is first
    assert await store.load(KEY) is None


async def test_too_large_or_worthless_entries_are_refused() -> None:
    """An entry over max_bytes, or a ttl not above zero (nan too), is refused, counted, and stores nothing."""
    store = MemoryStore(max_bytes=200)
    big = entry({}, body=b"x" * 300)
    small = entry({}, body=b"x")
    assert not await store.save(KEY, big, ttl=60)
    assert not await store.save(KEY, small, ttl=0)
    assert not await store.save(KEY, small, ttl=-1)
    assert not await store.save(KEY, small, ttl=math.nan)
    stats = store.stats()
    assert (stats.refused, stats.entries, stats.bytes) == (4, 0, 0)
    assert await store.load(KEY) is None


async def test_aclose_gives_the_memory_back_and_is_harmless_twice() -> None:
    """Closing drops the entries; closing again does nothing more."""
    store = MemoryStore(max_bytes=10_000)
    await store.save(KEY, entry({}), ttl=60)
    await store.aclose()
    await store.aclose()
    assert len(store) == 0
    assert store.stats().bytes == 0


def _round_trip(body: bytes, **kwargs: object):
    stored = entry(
        {"Vary": "Accept", "ETag": '"e"', "X-Odd": "caf\udce9", "Cache-Control": "max-age=60"},
        body=body,
        request_headers={"Accept": "application/json"},
        **kwargs,  # type: ignore[arg-type]
    )
    raw = encode_entry(KEY, stored, age=stored.age(0.0), wall=T0)
    return stored, raw


def test_the_value_format_round_trips_every_part() -> None:
    """Status, method, headers (a lone surrogate too), Vary, non-UTF-8 body and response time come back."""
    body = bytes(range(256)) + b"\n\xff\xfe"
    stored, raw = _round_trip(body, status=203)
    assert raw.startswith(ENTRY_MAGIC)
    assert raw.endswith(body)
    loaded = decode_entry(raw, KEY, now=500.0, wall_now=T0)
    assert (loaded.status, loaded.method, loaded.body) == (203, "GET", body)
    assert loaded.headers == stored.headers
    assert loaded.vary == stored.vary == (("accept", "application/json"),)
    assert loaded.response_time == stored.response_time
    assert (loaded.initial_age, loaded.stored_at) == (stored.initial_age, 500.0)
    assert loaded.size == stored.size


def test_the_age_grows_by_the_wall_time_since_saving_never_less() -> None:
    """Loaded 30 s of wall time later the entry is 30 s older; a loader's clock behind the saver's adds nothing."""
    stored = entry({"Age": "5"})
    raw = encode_entry(KEY, stored, age=stored.age(2.0), wall=T0)  # stored at 0: 2 s resident when saved
    assert decode_entry(raw, KEY, now=0.0, wall_now=T0 + 30).initial_age == 5 + 2 + 30
    assert decode_entry(raw, KEY, now=0.0, wall_now=T0 - 30).initial_age == 5 + 2


def test_a_vary_star_entry_round_trips_as_none() -> None:
    """Vary: * is recorded as None and stays None."""
    stored = entry({"Vary": "*"})
    assert stored.vary is None
    assert decode_entry(encode_entry(KEY, stored, age=0.0, wall=T0), KEY, now=0, wall_now=T0).vary is None


def test_a_time_that_is_not_finite_is_not_encoded() -> None:
    """An infinite age cannot be saved (another replica could not use it)."""
    with pytest.raises(ValueError, match="JSON"):
        encode_entry(KEY, entry({}), age=math.inf, wall=T0)


def _meta(**changes: object) -> bytes:
    meta = {"k": KEY.digest, "s": 200, "m": "GET", "h": [], "v": [], "a": 0.0, "w": T0, "t": T0}
    meta.update(changes)
    return ENTRY_MAGIC + json.dumps(meta).encode() + b"\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not an entry",
        ENTRY_MAGIC + b"{}",  # no end of metadata
        ENTRY_MAGIC + b"{\xff}\n",
        ENTRY_MAGIC + b"[" * 100_000 + b"\n",
        ENTRY_MAGIC + b"[]\n",
        _meta(k=cache_key("GET", "http://h/other", "scope").digest),
        _meta(s=True),
        _meta(s=42),
        _meta(s="200"),
        _meta(m=""),
        _meta(m=7),
        _meta(h=[["a"]]),
        _meta(h=[["a", None]]),
        _meta(h={"a": "b"}),
        _meta(v=[["a", 1]]),
        _meta(a=-1.0),
        _meta(a="1"),
        _meta(extra=1),
        ENTRY_MAGIC + b'{"k":"x","s":200,"m":"GET","h":[],"v":[],"a":NaN,"w":0,"t":0}\n',
        ENTRY_MAGIC + b'{"k":"x","s":200,"m":"GET","h":[],"v":[],"a":1e999,"w":0,"t":0}\n',
    ],
)
def test_a_corrupt_or_foreign_value_is_refused(raw: bytes) -> None:
    """Anything but this format's entry for this key is CorruptEntry, never another exception."""
    with pytest.raises(CorruptEntry):
        decode_entry(raw, KEY, now=0.0, wall_now=T0)
