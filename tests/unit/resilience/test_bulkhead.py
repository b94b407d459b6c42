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


@pytest.mark.parametrize("next_waiter", [True, False])
async def test_cancelled_at_the_moment_of_hand_over_passes_the_slot_on(next_waiter) -> None:
    """A waiter handed a slot and cancelled before it runs passes the slot to the next waiter, or frees it."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire()) if next_waiter else None
    await asyncio.sleep(0)
    bulkhead.release()  # the slot is now first's, but first has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    if second is not None:
        await asyncio.wait_for(second, 1)
        assert (bulkhead.in_flight, bulkhead.queued) == (1, 0)
        bulkhead.release()
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_timed_out_at_the_moment_of_hand_over_passes_the_slot_on() -> None:
    """A waiter whose timeout fires as it is handed a slot raises TimeoutError and passes the slot on."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire(timeout=0.05))
    second = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # first's timer is due; handing it the slot now races the timeout
    bulkhead.release()
    outcome = await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    if isinstance(outcome[0], TimeoutError):
        assert (bulkhead.in_flight, bulkhead.queued) == (1, 0)  # second holds the passed-on slot
    else:
        bulkhead.release()  # first won the race and holds a slot too
    bulkhead.release()
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


@pytest.mark.parametrize("how", ["cancel_first", "release_first"])
async def test_raised_limit_wakes_a_waiter_that_is_cancelled_at_once(how) -> None:
    """A raised (adaptive) limit admits a waiter cancelled in the same instant: its slot is not leaked."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    await bulkhead.acquire()
    waiters = [asyncio.create_task(bulkhead.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    if how == "cancel_first":
        waiters[0].cancel()
        bulkhead.set_limit(3)
    else:
        bulkhead.set_limit(3)
        waiters[0].cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None, None]
    assert (bulkhead.in_flight, bulkhead.queued) == (3, 0)
    for _ in range(3):
        bulkhead.release()
    assert bulkhead.in_flight == 0


async def test_release_racing_cancellation_across_threads_never_leaks() -> None:
    """Slots released on another thread while their waiters are cancelled here: nothing leaks, 300 times over."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    for _ in range(300):
        holder_ready, release_now = threading.Event(), threading.Event()

        def hold(ready: threading.Event = holder_ready, go: threading.Event = release_now) -> None:
            async def run() -> None:
                await bulkhead.acquire()
                ready.set()
                await asyncio.to_thread(go.wait)
                bulkhead.release()

            asyncio.run(run())

        thread = threading.Thread(target=hold)
        thread.start()
        await asyncio.to_thread(holder_ready.wait)
        waiter = asyncio.create_task(bulkhead.acquire())
        await asyncio.sleep(0)
        release_now.set()
        await asyncio.sleep(0)
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            pass
        else:
            bulkhead.release()  # it got the slot before the cancel landed
        await asyncio.to_thread(thread.join)
        assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


def test_a_waiter_whose_loop_is_gone_does_not_keep_the_slot() -> None:
    """A waiter left on a closed event loop (a stopped sync twin) is skipped; the slot goes on to the next."""
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    assert bulkhead.try_acquire()
    dead = asyncio.new_event_loop()
    orphan = dead.create_task(bulkhead.acquire())
    dead.run_until_complete(asyncio.sleep(0))  # the orphan is now queued
    dead.close()
    assert bulkhead.queued == 1

    async def next_caller() -> None:
        waiting = asyncio.create_task(bulkhead.acquire())
        await asyncio.sleep(0)
        await asyncio.to_thread(bulkhead.release)  # released from a thread, as a sync twin would
        await asyncio.wait_for(waiting, 1)

    asyncio.run(next_caller())
    assert (bulkhead.in_flight, bulkhead.queued) == (1, 0)
    bulkhead.release()
    assert bulkhead.in_flight == 0
    orphan._log_destroy_pending = False  # its loop is closed; it can never run again
    orphan.get_coro().close()
