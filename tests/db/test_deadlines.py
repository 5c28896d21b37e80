"""`Deadlines` (db/deadlines.py): `asyncio.timeout`'s behaviour with one loop timer for
all the scopes in flight. Timing here is real but coarse: a scope that must expire waits
forever, one that must not has minutes."""

from __future__ import annotations

import asyncio

import pytest

from db.deadlines import Deadlines


async def test_a_passed_deadline_cancels_the_work_and_raises_timeout_error() -> None:
    deadlines = Deadlines()
    task = asyncio.current_task()
    assert task is not None
    scope = deadlines.timeout(0.01)
    with pytest.raises(TimeoutError) as info:
        async with scope:
            await asyncio.Event().wait()
    assert scope.expired()
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert task.cancelling() == 0  # uncancelled: the task goes on
    assert len(deadlines) == 0
    await asyncio.sleep(0)  # and is not cancelled again


async def test_work_that_ends_in_time_leaves_no_trace() -> None:
    deadlines = Deadlines()
    async with deadlines.timeout(60) as scope:
        await asyncio.sleep(0)
    assert not scope.expired()
    assert len(deadlines) == 0


async def test_a_cancellation_from_elsewhere_passes_through() -> None:
    deadlines = Deadlines()
    entered = asyncio.Event()

    async def work() -> None:
        async with deadlines.timeout(60):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_an_error_inside_is_raised_unchanged() -> None:
    deadlines = Deadlines()
    with pytest.raises(KeyError):
        async with deadlines.timeout(60):
            raise KeyError("x")


async def test_one_timer_serves_every_scope_that_ends_in_time() -> None:
    deadlines = Deadlines()
    async with deadlines.timeout(60):
        pass
    timer = deadlines._timer
    assert timer is not None
    for _ in range(100):
        async with deadlines.timeout(60):
            await asyncio.sleep(0)
    assert deadlines._timer is timer  # never re-armed: later deadlines come after it


async def test_a_shorter_deadline_entered_later_fires_first_and_the_rest_stay_armed() -> None:
    deadlines = Deadlines()
    started = asyncio.Event()

    async def long() -> str:
        async with deadlines.timeout(600):
            started.set()
            await asyncio.sleep(0.2)
        return "done"

    long_task = asyncio.create_task(long())
    await started.wait()
    with pytest.raises(TimeoutError):
        async with deadlines.timeout(0.01):
            await asyncio.Event().wait()
    # The timer that expired the short scope re-armed itself for the long one.
    [remaining] = deadlines._scopes
    assert deadlines._armed_at == remaining.when
    assert await long_task == "done"


async def times_out(deadlines: Deadlines) -> bool:
    """Whether a wait that never ends, under a 10 ms scope, timed out."""
    try:
        async with deadlines.timeout(0.01):
            await asyncio.Event().wait()
    except TimeoutError:
        return True
    return False


async def test_two_due_at_once_both_expire() -> None:
    deadlines = Deadlines()
    assert await asyncio.gather(times_out(deadlines), times_out(deadlines)) == [True, True]


def test_a_new_loop_starts_afresh() -> None:
    deadlines = Deadlines()

    async def pending_then_stop() -> None:
        async with deadlines.timeout(600):
            await asyncio.sleep(0)

    asyncio.run(pending_then_stop())
    assert asyncio.run(times_out(deadlines))
    assert asyncio.run(times_out(deadlines))


async def test_a_scope_is_entered_once() -> None:
    scope = Deadlines().timeout(60)
    async with scope:
        pass
    with pytest.raises(RuntimeError):
        async with scope:
            pass
