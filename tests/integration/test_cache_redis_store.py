"""The Redis cache store against a real redis-server: round trips, age across replicas, TTL, faults."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from app.cache import CacheEntry, CacheStore, RedisStore, cache_key
from app.cache.redis_store import encode_entry
from app.state import SharedState, SharedStateSettings
from tests.support.manual_clock import ManualClock
from tests.unit.cache.helpers import T0, entry

#: The shared state's deadline in these tests, and what a call may take beyond it (the
#: loop's scheduling on a loaded CI machine).
DEADLINE = 0.02
MARGIN = 0.03
SCOPE = "Bearer s3cret-token-of-alice"
KEY = cache_key("GET", "http://pricing/quote?sku=42", SCOPE)


class Wall:
    """A wall clock the test sets."""

    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


@pytest.fixture
async def shared() -> AsyncIterator[Callable[..., SharedState]]:
    """Build shared states (each a replica with its own registry); all closed at teardown."""
    made: list[SharedState] = []

    def build(url: str, **settings: object) -> SharedState:
        state = SharedState(
            SharedStateSettings(url=url, **{"deadline_seconds": DEADLINE, **settings}),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
        )
        made.append(state)
        return state

    yield build
    for state in made:
        await state.aclose()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, "never became true"
        await asyncio.sleep(0.01)


async def started(state: SharedState) -> SharedState:
    """``state`` started, once Redis has answered it (its heartbeat) and it is no longer degraded."""
    await state.start()
    await until(lambda: not state.degraded)
    return state


def rich_entry(**kwargs: object) -> CacheEntry:
    """An entry with every part a store must keep: status, method, headers, Vary, a binary body."""
    return entry(
        {
            "Cache-Control": "max-age=60",
            "ETag": '"v7"',
            "Vary": "Accept, Accept-Language",
            "X-Raw": "caf\udce9",
        },
        status=203,
        body=b"\x00\xff\xfe binary \x80\n\r\n" + bytes(range(256)),
        request_headers={"Accept": "application/json"},
        **kwargs,  # type: ignore[arg-type]
    )


async def timed(call: Callable[[], object]) -> tuple[object, float]:
    started_at = time.monotonic()
    result = await call()  # type: ignore[misc]
    return result, time.monotonic() - started_at


async def test_an_entry_round_trips_whole_and_the_scope_never_reaches_redis(redis_server, shared) -> None:
    """Status, method, headers, Vary and non-UTF-8 body come back; neither key nor value holds the scope."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=100_000)
    assert isinstance(store, CacheStore)
    stored = rich_entry()
    assert await store.save(KEY, stored, ttl=60)
    loaded = await store.load(KEY)
    assert loaded is not None
    assert (loaded.status, loaded.method, loaded.body) == (203, "GET", stored.body)
    assert loaded.headers == stored.headers
    assert loaded.vary == stored.vary == (("accept", "application/json"), ("accept-language", None))
    assert loaded.size == stored.size
    names = await state.client.keys("*cache*")  # type: ignore[union-attr]
    assert names == [store.redis_key(KEY).encode()]
    assert b"s3cret" not in names[0]
    assert b"s3cret" not in await state.client.get(names[0])  # type: ignore[union-attr,operator]
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.failures, stats.entries) == (1, 0, 0, -1)
    assert stats.bytes == len(await state.client.get(names[0]))  # type: ignore[union-attr,arg-type]


async def test_a_head_entry_and_a_miss_and_remove(redis_server, shared) -> None:
    """A HEAD entry keeps its method; an unknown key is a miss; remove deletes the key in Redis."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=10_000)
    head = cache_key("HEAD", "http://pricing/quote?sku=42", SCOPE)
    stored = entry({"Cache-Control": "max-age=60"}, body=b"")
    head_entry = dataclasses.replace(stored, method="HEAD")
    assert await store.save(head, head_entry, ttl=60)
    loaded = await store.load(head)
    assert loaded is not None
    assert loaded.method == "HEAD"
    assert await store.load(KEY) is None
    await store.remove(head)
    assert await state.client.exists(store.redis_key(head)) == 0  # type: ignore[union-attr]
    assert await store.load(head) is None
    assert (store.stats().hits, store.stats().misses) == (1, 2)


async def test_age_is_carried_across_replicas_with_unrelated_monotonic_clocks(redis_server, shared) -> None:
    """Saved at age 15 by one replica, loaded 20 wall seconds later by another: age 35, then it ages on the loader's clock."""
    saver_clock, loader_clock = ManualClock(start=1000.0), ManualClock(start=50.0)
    wall = Wall(T0 + 100)
    saver = RedisStore(
        await started(shared(redis_server.url)),
        "pricing",
        max_bytes=10_000,
        clock=saver_clock,
        wall_clock=wall,
    )
    loader = RedisStore(
        await started(shared(redis_server.url)),
        "pricing",
        max_bytes=10_000,
        clock=loader_clock,
        wall_clock=Wall(T0 + 120),
    )
    stored = entry({"Age": "5", "Cache-Control": "max-age=600"}, stored_at=1000.0)
    await saver_clock.advance(10)
    assert stored.age(saver_clock.now()) == 15
    assert await saver.save(KEY, stored, ttl=600)
    loaded = await loader.load(KEY)
    assert loaded is not None
    assert loaded.stored_at == 50.0
    assert loaded.age(loader_clock.now()) == 35
    await loader_clock.advance(5)
    assert loaded.age(loader_clock.now()) == 40
    wall.t = T0 + 200  # a loader whose wall clock is behind the saver's adds nothing, takes nothing
    assert await saver.save(KEY, stored, ttl=600)
    behind = await loader.load(KEY)
    assert behind is not None
    assert behind.age(loader_clock.now()) == 15


async def test_the_ttl_is_set_on_the_key(redis_server, shared) -> None:
    """SET with PX: PTTL is the ttl rounded up to the millisecond, and capped at max_ttl."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=10_000, max_ttl=3600)
    assert await store.save(KEY, entry({}), ttl=12.3456)
    pttl = await state.client.pttl(store.redis_key(KEY))  # type: ignore[union-attr]
    assert 12_000 < pttl <= 12_346
    assert await store.save(KEY, entry({}), ttl=10**9)
    pttl = await state.client.pttl(store.redis_key(KEY))  # type: ignore[union-attr]
    assert 3_599_000 < pttl <= 3_600_000


async def test_too_large_or_worthless_entries_are_refused_without_a_write(redis_server, shared) -> None:
    """A value over max_bytes (the body alone, or with its metadata) or a ttl not > 0 is refused; nothing is written."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=1000)
    body_too_large = entry({}, body=b"x" * 1001)
    value_too_large = entry({"X-Pad": "p" * 200}, body=b"x" * 900)
    assert not await store.save(KEY, body_too_large, ttl=60)
    assert not await store.save(KEY, value_too_large, ttl=60)
    assert not await store.save(KEY, entry({}), ttl=0)
    assert await state.client.exists(store.redis_key(KEY)) == 0  # type: ignore[union-attr]
    stats = store.stats()
    assert (stats.refused, stats.bytes, stats.failures) == (3, 0, 0)
    assert await store.save(KEY, entry({}, body=b"x" * 500), ttl=60)  # one that fits is kept


async def test_a_corrupt_or_foreign_value_is_a_miss_and_removed(redis_server, shared) -> None:
    """Garbage, or another key's entry, under the key: a miss (never an exception), and the key deleted."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=10_000)
    name = store.redis_key(KEY)
    other = cache_key("GET", "http://pricing/quote?sku=43", SCOPE)
    foreign = encode_entry(other, entry({}), age=0.0, wall=T0)
    for value in (b"\x80\x04garbage", b"RCE1{not json\n", foreign):
        await state.client.set(name, value)  # type: ignore[union-attr]
        assert await store.load(KEY) is None
        assert await state.client.exists(name) == 0  # type: ignore[union-attr]
    await state.client.hset(name, "a", "b")  # type: ignore[union-attr,misc]  # a hash: GET is WRONGTYPE
    assert await store.load(KEY) is None
    assert store.corrupt == 3
    assert store.stats().misses == 4


async def test_two_replicas_share_an_entry(redis_server, shared) -> None:
    """One replica's save is the other's hit; one's remove is the other's miss; another service never sees it."""
    first, second = (
        shared(redis_server.url, key_prefix="fleet:"),
        shared(redis_server.url, key_prefix="fleet:"),
    )
    assert first.replica_id != second.replica_id
    one = RedisStore(await started(first), "pricing", max_bytes=10_000)
    two = RedisStore(await started(second), "pricing", max_bytes=10_000)
    stranger = RedisStore(second, "billing", max_bytes=10_000)
    stored = rich_entry()
    assert await one.save(KEY, stored, ttl=60)
    shared_entry = await two.load(KEY)
    assert shared_entry is not None
    assert (shared_entry.body, shared_entry.headers) == (stored.body, stored.headers)
    assert await stranger.load(KEY) is None
    await two.remove(KEY)
    assert await one.load(KEY) is None


async def test_a_killed_redis_is_a_fast_miss_then_back(redis_server, shared, caplog) -> None:
    """Redis killed: load None and save False within the deadline, counted, logged once; restarted: hits again."""
    caplog.set_level(logging.INFO, logger="app.cache")
    state = await started(shared(redis_server.url, breaker_reset_seconds=0.2))
    store = RedisStore(state, "pricing", max_bytes=10_000)
    assert await store.save(KEY, entry({}), ttl=60)
    await asyncio.to_thread(redis_server.kill)
    worst = 0.0
    for _ in range(10):
        loaded, took = await timed(lambda: store.load(KEY))
        assert loaded is None
        saved, took_save = await timed(lambda: store.save(KEY, entry({}), ttl=60))
        assert saved is False
        worst = max(worst, took, took_save)
    assert worst < DEADLINE + MARGIN, worst
    assert store.stats().failures == 20
    assert state.degraded
    await asyncio.to_thread(redis_server.start)  # back on the same port, empty
    await until(lambda: not state.degraded)
    assert await store.load(KEY) is None  # a real miss: the restarted Redis is empty
    assert await store.save(KEY, entry({}), ttl=60)
    assert await store.load(KEY) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "app.cache"]
    assert len(lines) == 2, lines  # one for the streak, one for the return
    assert "unavailable" in lines[0]
    assert "back" in lines[1]
    assert "s3cret" not in " ".join(lines)


async def test_a_hung_redis_never_holds_a_call_past_the_deadline(redis_server, shared) -> None:
    """Redis SIGSTOPped: every load and save ends within the deadline (a miss, False); SIGCONT: it works again."""
    state = await started(shared(redis_server.url, breaker_reset_seconds=0.2))
    store = RedisStore(state, "pricing", max_bytes=10_000)
    assert await store.save(KEY, entry({}), ttl=60)
    redis_server.stop()
    worst = 0.0
    for _ in range(10):
        loaded, took = await timed(lambda: store.load(KEY))
        assert loaded is None
        saved, took_save = await timed(lambda: store.save(KEY, entry({}), ttl=60))
        assert saved is False
        worst = max(worst, took, took_save)
        await asyncio.sleep(0.005)
    assert worst < DEADLINE + MARGIN, worst
    assert store.stats().failures == 20
    assert store.stats().hits == 0
    redis_server.cont()
    await until(lambda: not state.degraded)
    assert await store.load(KEY) is not None  # the entry saved before the hang is still there
    assert await store.save(KEY, entry({}), ttl=60)


async def test_a_degraded_state_is_a_miss_without_a_round_trip(shared) -> None:
    """Shared state not started (or its breaker open): load None, save False, and no Redis call even attempted."""
    state = shared("redis://127.0.0.1:1/0")
    store = RedisStore(state, "pricing", max_bytes=10_000)
    assert state.refusing
    _, took = await timed(lambda: store.load(KEY))
    assert await store.save(KEY, entry({}), ttl=60) is False
    await store.remove(KEY)
    assert took < 0.005
    calls = state._families.calls  # the state's own call counter
    assert sum(sample.value for metric in calls.collect() for sample in metric.samples) == 0
    assert store.stats().failures == 3
    assert store.stats().misses == 1


async def test_a_closed_store_stops_using_redis(redis_server, shared) -> None:
    """After aclose, loads are misses and saves False; the shared state stays open for its other users."""
    state = await started(shared(redis_server.url))
    store = RedisStore(state, "pricing", max_bytes=10_000)
    assert await store.save(KEY, entry({}), ttl=60)
    await store.aclose()
    await store.aclose()
    assert await store.load(KEY) is None
    assert not await store.save(KEY, entry({}), ttl=60)
    assert await state.client.exists(store.redis_key(KEY)) == 1  # type: ignore[union-attr]
