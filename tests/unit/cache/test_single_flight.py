"""Single flight: concurrent misses of one key make one fetch; errors and cancellations are shared right."""

from __future__ import annotations

import asyncio

import pytest

from app.cache import SingleFlight


class Boom(Exception):
    pass


async def test_one_hundred_concurrent_callers_make_one_fetch() -> None:
    """100 callers of one key: one fetch, all get its result."""
    flight: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "body"

    waiters = [asyncio.create_task(flight.run("k", fetch)) for _ in range(100)]
    await asyncio.sleep(0)
    assert flight.in_flight == 1
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert results == ["body"] * 100
    assert (flight.started, flight.joined, flight.in_flight) == (1, 99, 0)


async def test_a_failing_fetch_fails_every_waiter_once() -> None:
    """The fetch raises: every one of 100 waiters gets that error, and the fetch ran once."""
    flight: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise Boom("upstream down")

    waiters = [asyncio.create_task(flight.run("k", fetch)) for _ in range(100)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, Boom) and str(r) == "upstream down" for r in results)
    assert flight.in_flight == 0


async def test_a_cancelled_waiter_does_not_cancel_the_fetch() -> None:
    """The first caller is cancelled: the fetch goes on and the others get the result."""
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def fetch() -> int:
        await release.wait()
        return 42

    first = asyncio.create_task(flight.run("k", fetch))
    others = [asyncio.create_task(flight.run("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await asyncio.gather(*others) == [42] * 5
    assert flight.started == 1


async def test_a_fetch_whose_waiters_all_left_still_completes_without_warnings() -> None:
    """Every waiter cancelled: the failing fetch finishes alone, its error retrieved (no warning)."""
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    finished = asyncio.Event()

    async def fetch() -> int:
        try:
            await release.wait()
            raise Boom("late")
        finally:
            finished.set()

    waiter = asyncio.create_task(flight.run("k", fetch))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await asyncio.wait_for(finished.wait(), 1)
    await asyncio.sleep(0)
    assert flight.in_flight == 0


async def test_keys_are_independent_and_a_finished_key_fetches_again() -> None:
    """Two keys fetch separately; after a fetch ends, the next call for the key fetches anew."""
    flight: SingleFlight[str] = SingleFlight()
    calls: list[str] = []

    def fetcher(name: str):
        async def fetch() -> str:
            calls.append(name)
            await asyncio.sleep(0)
            return name

        return fetch

    assert await asyncio.gather(flight.run("a", fetcher("a")), flight.run("b", fetcher("b"))) == ["a", "b"]
    assert await flight.run("a", fetcher("a")) == "a"
    assert calls == ["a", "b", "a"]
