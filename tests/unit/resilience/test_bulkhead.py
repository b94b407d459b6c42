"""The bulkhead's limits, its FIFO queue, and hand-over across event loops."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.resilience.bulkhead import Bulkhead, BulkheadRejectedError


async def test_limits_and_fifo_hand_over() -> None:
    """Two in flight, two waiting, the fifth refused; released slots go to waiters in order."""
    bulkhead = Bulkhead(max_concurrent=2, max_waiting=2)
    await bulkhead.acquire()
    await bulkhead.acquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await bulkhead.acquire()
        order.append(n)

    w1 = asyncio.create_task(waiter(1))
    await asyncio.sleep(0)
    w2 = asyncio.create_task(waiter(2))
    await asyncio.sleep(0)
    assert bulkhead.queued == 2
    with pytest.raises(BulkheadRejectedError):
        await bulkhead.acquire()
    assert bulkhead.rejections == 1
    bulkhead.release()
    await w1
    bulkhead.release()
    await w2
    assert order == [1, 2]
    assert (bulkhead.in_flight, bulkhead.queued) == (2, 0)
    bulkhead.release()
    bulkhead.release()
    assert bulkhead.in_flight == 0


async def test_try_acquire_does_not_jump_the_queue() -> None:
    """With waiters queued, a free slot is theirs, not a newcomer's."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    assert bulkhead.try_acquire()
    task = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    bulkhead.release()
    assert not bulkhead.try_acquire()
    await task
    assert bulkhead.in_flight == 1


async def test_waiter_timeout_and_cancellation_free_their_place() -> None:
    """A waiter that times out or is cancelled leaves the queue and takes no slot."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    await bulkhead.acquire()
    with pytest.raises(TimeoutError):
        await bulkhead.acquire(timeout=0.01)
    task = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.queued == 0
    bulkhead.release()
    assert bulkhead.in_flight == 0


async def test_zero_timeout_is_refused_at_once() -> None:
    """A call whose deadline has run out does not queue."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    await bulkhead.acquire()
    with pytest.raises(BulkheadRejectedError):
        await bulkhead.acquire(timeout=0)


async def test_release_from_another_loop_wakes_the_waiter() -> None:
    """A slot released on another thread's loop (a sync twin) wakes a waiter on this loop."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=1)
    holder_ready = threading.Event()
    release_now = threading.Event()

    def other_loop() -> None:
        async def hold() -> None:
            await bulkhead.acquire()
            holder_ready.set()
            await asyncio.to_thread(release_now.wait)
            bulkhead.release()

        asyncio.run(hold())

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(holder_ready.wait)
    waiting = asyncio.create_task(bulkhead.acquire(timeout=2))
    await asyncio.sleep(0.01)
    assert bulkhead.queued == 1
    release_now.set()
    await waiting
    assert bulkhead.in_flight == 1
    bulkhead.release()
    await asyncio.to_thread(thread.join)


def test_invalid_limits_are_refused() -> None:
    """A bulkhead needs at least one slot."""
    with pytest.raises(ValueError, match="max_concurrent"):
        Bulkhead(max_concurrent=0)


def test_repr_shows_limits_and_load() -> None:
    """The repr shows limits and current load."""
    assert repr(Bulkhead(3, 4)) == "Bulkhead(max_concurrent=3, max_waiting=4, in_flight=0, queued=0)"
