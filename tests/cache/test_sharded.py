from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import CacheStats, ShardedTTLCache
from tests.clock import FakeClock


class Boom(Exception):
    pass


def counting_loader(value: object, calls: list[int]) -> Callable[[], Awaitable[object]]:
    async def load() -> object:
        calls.append(1)
        return value

    return load


def gated_loader(
    gate: asyncio.Event, calls: list[int], result: object = None, error: Exception | None = None
) -> Callable[[], Awaitable[object]]:
    async def load() -> object:
        calls.append(1)
        await gate.wait()
        if error is not None:
            raise error
        return result

    return load


def keys_of(cache: ShardedTTLCache[str, object], keys: list[str]) -> list[str]:
    return [key for key in keys if cache.get(key)[0]]


@settings(max_examples=25, deadline=None)
@given(
    shards=st.integers(1, 32),
    max_entries=st.integers(1, 300),
    count=st.integers(0, 3000),
    prefix=st.text(max_size=3),
)
def test_bound_holds_under_concurrent_inserts(
    shards: int, max_entries: int, count: int, prefix: str
) -> None:
    cache: ShardedTTLCache[str, int] = ShardedTTLCache(
        shards=shards, max_entries=max_entries, clock=FakeClock()
    )
    peak = 0

    async def insert(i: int) -> None:
        nonlocal peak

        async def load() -> int:
            await asyncio.sleep(0)  # yield so that the loads interleave
            return i

        key = f"{prefix}{i}"
        if i % 3:
            assert await cache.get_or_load(key, load) == i
        else:
            cache.set(key, i)
        peak = max(peak, len(cache))

    async def main() -> None:
        await asyncio.gather(*(insert(i) for i in range(count)))

    asyncio.run(main())
    stats = cache.stats()
    assert peak <= max_entries
    assert len(cache) == stats.size <= max_entries
    assert stats.loads == count - len(range(0, count, 3))
    assert stats.expired_evictions == 0
    assert stats.capacity_evictions == count - stats.size


@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.integers(0, 12)),
            st.tuples(st.just("get"), st.integers(0, 12)),
            st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        ),
        max_size=80,
    ),
    capacity=st.integers(1, 6),
)
def test_eviction_matches_a_sorting_model(ops: list[tuple[str, float]], capacity: int) -> None:
    # The model sorts by expiry on every overflow; the cache must evict the same entries.
    clock = FakeClock()
    cache: ShardedTTLCache[int, int] = ShardedTTLCache(
        shards=1, max_entries=capacity, ttl=3.0, clock=clock
    )
    model: dict[int, tuple[float, int]] = {}
    seq = 0
    for op, arg in ops:
        if op == "tick":
            clock.advance(arg)
            continue
        key = int(arg)
        if op == "get":
            entry = model.get(key)
            live = entry is not None and entry[0] > clock.now
            if entry is not None and not live:
                del model[key]
            assert cache.get(key) == ((True, key) if live else (False, None))
            continue
        if key not in model and len(model) >= capacity:
            for stale in [k for k, (exp, _) in model.items() if exp <= clock.now]:
                del model[stale]
            if len(model) >= capacity:
                del model[min(model, key=lambda k: model[k])]
        seq += 1
        model[key] = (clock.now + 3.0, seq)
        cache.set(key, key)
        assert len(cache) == len(model) <= capacity


def test_bound_holds_across_threads() -> None:
    max_entries = 100
    cache: ShardedTTLCache[int, int] = ShardedTTLCache(max_entries=max_entries)
    done = threading.Event()
    peaks: list[int] = []

    def watch() -> None:
        peak = 0
        while not done.is_set():
            peak = max(peak, len(cache))
        peaks.append(peak)

    def hammer(worker: int) -> int:
        peak = 0
        for i in range(5_000):
            key = worker * 1_000_000 + i if i % 2 else i % 300
            cache.set(key, i)
            cache.get(i % 300)
            if i % 97 == 0:
                cache.invalidate(i % 7)
            peak = max(peak, len(cache))
        return peak

    def hammer_async(worker: int) -> int:
        async def main() -> int:
            peak = 0
            for i in range(2_000):

                async def load(i: int = i) -> int:
                    return i

                await cache.get_or_load(worker * 1_000_000 + i, load)
                peak = max(peak, len(cache))
            return peak

        return asyncio.run(main())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # many more thread switches inside the critical sections
    try:
        with ThreadPoolExecutor(max_workers=7) as pool:
            watcher = pool.submit(watch)
            sync_peaks = [pool.submit(hammer, w) for w in range(1, 5)]
            async_peaks = [pool.submit(hammer_async, w) for w in range(5, 7)]
            worker_peaks = [f.result(60) for f in sync_peaks + async_peaks]
            done.set()
            watcher.result(10)
    finally:
        sys.setswitchinterval(interval)
    assert max(worker_peaks + peaks) <= max_entries
    stats = cache.stats()
    assert len(cache) == stats.size <= max_entries
    assert stats.loads == 2 * 2_000


def test_loads_on_different_event_loops_do_not_share_futures() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    started, release = threading.Event(), threading.Event()

    async def slow() -> object:
        started.set()
        await asyncio.to_thread(release.wait)
        return "slow"

    async def fast() -> object:
        return "fast"

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(asyncio.run, cache.get_or_load("k", slow))
        try:
            assert started.wait(timeout=10)
            # Joining the other loop's future would fail; this loop loads for itself instead.
            assert pool.submit(asyncio.run, cache.get_or_load("k", fast)).result(10) == "fast"
        finally:
            release.set()
        assert first.result(10) == "slow"
    assert cache.get("k") == (True, "slow")
    assert cache.stats().loads == 2


def test_a_load_cancelled_by_loop_shutdown_leaves_no_flight_behind() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    started: list[str] = []

    async def load() -> object:
        started.append("started")
        await asyncio.Event().wait()
        return "never"

    def run_and_shut_down(iterations: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            waiter = loop.create_task(cache.get_or_load("k", load))
            for _ in range(iterations):
                loop.call_soon(loop.stop)
                loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            assert waiter.cancelled()
        finally:
            loop.close()

    run_and_shut_down(1)  # the load task is cancelled before it starts
    assert started == []
    run_and_shut_down(2)  # the load task is cancelled inside the loader
    assert started == ["started"]
    assert not any(shard.inflight for shard in cache._shards)  # private peek: no leaked loop
    stats = cache.stats()
    assert (stats.loads, stats.load_errors, stats.size) == (2, 0, 0)


def test_capacity_is_split_exactly() -> None:
    cache: ShardedTTLCache[int, int] = ShardedTTLCache(shards=16, max_entries=1000)
    for i in range(10_000):
        cache.set(i, i)  # small ints hash to themselves, so every shard fills up
    assert len(cache) == 1000
    tiny: ShardedTTLCache[int, int] = ShardedTTLCache(shards=16, max_entries=5)
    for i in range(100):
        tiny.set(i, i)
    assert len(tiny) == 5


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ShardedTTLCache(shards=0)
    with pytest.raises(ValueError):
        ShardedTTLCache(max_entries=0)
    with pytest.raises(ValueError):
        ShardedTTLCache(ttl=0)


async def test_expired_entries_are_evicted_first_then_nearest_expiry() -> None:
    clock = FakeClock()
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(
        shards=1, max_entries=3, ttl=3.0, clock=clock
    )
    cache.set("a", 1)
    cache.set("b", 2)
    clock.advance(1)
    cache.set("c", 3)
    clock.advance(2.5)  # a and b expired, c has 0.5 s left
    cache.set("d", 4)
    assert keys_of(cache, ["a", "b", "c", "d"]) == ["c", "d"]
    assert cache.stats().expired_evictions == 2
    cache.set("e", 5)
    cache.set("f", 6)  # full of live entries: c expires soonest
    assert keys_of(cache, ["c", "d", "e", "f"]) == ["d", "e", "f"]
    assert cache.stats().capacity_evictions == 1


async def test_replacing_a_key_renews_its_expiry_and_eviction_rank() -> None:
    clock = FakeClock()
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(shards=1, max_entries=3, clock=clock)
    for key in "abc":
        cache.set(key, key)
        clock.advance(1)
    cache.set("a", "A")  # a now expires last
    cache.set("d", "d")
    assert keys_of(cache, ["a", "b", "c", "d"]) == ["a", "c", "d"]
    assert cache.get("a") == (True, "A")


async def test_ttl_with_injected_clock() -> None:
    clock = FakeClock(100.0)
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(ttl=3.0, clock=clock)
    calls: list[int] = []
    assert await cache.get_or_load("k", counting_loader("v", calls)) == "v"
    clock.advance(2.999)
    assert await cache.get_or_load("k", counting_loader("w", calls)) == "v"
    clock.advance(0.001)
    assert cache.get("k") == (False, None)
    assert await cache.get_or_load("k", counting_loader("w", calls)) == "w"
    assert len(calls) == 2
    assert cache.stats().expired_evictions == 1


async def test_none_is_cached() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    calls: list[int] = []
    assert await cache.get_or_load("k", counting_loader(None, calls)) is None
    assert await cache.get_or_load("k", counting_loader("other", calls)) is None
    assert cache.get("k") == (True, None)
    assert len(calls) == 1


async def test_concurrent_misses_run_the_loader_once() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    gate = asyncio.Event()
    calls: list[int] = []
    loader = gated_loader(gate, calls, result="v")
    waiters = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == ["v"] * 1000
    assert len(calls) == 1
    assert await cache.get_or_load("k", loader) == "v"
    assert cache.stats() == CacheStats(
        hits=1, misses=1000, loads=1, load_errors=0, expired_evictions=0,
        capacity_evictions=0, size=1,
    )  # fmt: skip


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    gate = asyncio.Event()
    calls: list[int] = []
    error = Boom("backend down")
    loader = gated_loader(gate, calls, error=error)
    waiters = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(result is error for result in results)
    assert len(calls) == 1
    assert cache.get("k") == (False, None)
    assert await cache.get_or_load("k", counting_loader("v", calls)) == "v"
    assert len(calls) == 2
    stats = cache.stats()
    assert (stats.loads, stats.load_errors, stats.size) == (2, 1, 1)


async def test_cancelling_one_waiter_leaves_the_others_their_value() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    gate = asyncio.Event()
    calls: list[int] = []
    loader = gated_loader(gate, calls, result="v")
    # The first waiter is the one that started the load.
    waiters = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == ["v", "v"]
    assert cache.get("k") == (True, "v")
    assert len(calls) == 1


async def test_cancelling_every_waiter_still_completes_the_load() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    gate = asyncio.Event()
    calls: list[int] = []
    waiter = asyncio.create_task(cache.get_or_load("k", gated_loader(gate, calls, result="v")))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(3):
        await asyncio.sleep(0)
    assert cache.get("k") == (True, "v")


async def test_invalidate_during_a_load_answers_waiters_but_stores_nothing() -> None:
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(clock=FakeClock())
    gate = asyncio.Event()
    calls: list[int] = []
    waiter = asyncio.create_task(cache.get_or_load("k", gated_loader(gate, calls, result="old")))
    await asyncio.sleep(0)
    assert cache.invalidate("k") is False
    gate.set()
    assert await waiter == "old"
    assert cache.get("k") == (False, None)
    assert await cache.get_or_load("k", counting_loader("new", calls)) == "new"
    assert cache.invalidate("k") is True


async def test_counters() -> None:
    clock = FakeClock()
    cache: ShardedTTLCache[str, object] = ShardedTTLCache(
        shards=1, max_entries=2, ttl=3.0, clock=clock
    )
    calls: list[int] = []

    async def fail() -> object:
        raise Boom

    await cache.get_or_load("a", counting_loader(1, calls))  # miss, load
    await cache.get_or_load("a", counting_loader(1, calls))  # hit
    cache.get("zz")  # miss
    cache.set("b", 2)
    cache.set("c", 3)  # capacity eviction of a
    clock.advance(3)
    cache.get("b")  # miss, expired eviction
    with pytest.raises(Boom):
        await cache.get_or_load("d", fail)  # miss, load, load error
    stats = cache.stats()
    assert stats == CacheStats(
        hits=1, misses=4, loads=2, load_errors=1, expired_evictions=1,
        capacity_evictions=1, size=1,
    )  # fmt: skip
    assert stats.evictions == 2


async def test_a_peek_before_get_or_load_counts_one_miss() -> None:
    cache: ShardedTTLCache[str, int] = ShardedTTLCache(max_entries=4, ttl=5.0, clock=FakeClock())

    async def load() -> int:
        return 7

    assert cache.get("a", count_miss=False) == (False, None)
    assert await cache.get_or_load("a", load) == 7
    assert cache.get("a", count_miss=False) == (True, 7)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (1, 1, 1)


def test_get_many_answers_and_counts_as_get_does_key_by_key() -> None:
    def filled() -> tuple[ShardedTTLCache[int, object], FakeClock]:
        clock = FakeClock()
        cache: ShardedTTLCache[int, object] = ShardedTTLCache(
            shards=4, max_entries=64, ttl=3.0, clock=clock
        )
        for key in range(10):
            cache.set(key, None if key == 3 else key * 10)
            clock.advance(0.25)
        clock.advance(0.6)  # keys 0..2 expired
        return cache, clock

    keys = [0, 3, 5, 9, 42, 5, 1]
    for count_miss in (True, False):
        batch, _ = filled()
        single, _ = filled()
        assert batch.get_many(keys, count_miss=count_miss) == [
            single.get(k, count_miss=count_miss) for k in keys
        ]
        assert batch.stats() == single.stats()
    assert batch.get_many([]) == []


def test_get_many_counts_every_hit_across_threads() -> None:
    """Its hits are read without the shards' locks but counted under one lock: none is
    lost to a thread switch, while other threads write the same shards."""
    cache: ShardedTTLCache[int, int] = ShardedTTLCache(shards=4, max_entries=1000, ttl=3600)
    keys = list(range(20))
    for key in keys:
        cache.set(key, key * 10)

    def read() -> None:
        for _ in range(2_000):
            assert cache.get_many(keys) == [(True, key * 10) for key in keys]

    def write() -> None:
        for i in range(2_000):
            cache.set(100 + i % 50, i)  # other keys, same shards

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(read) for _ in range(4)] + [pool.submit(write) for _ in range(2)]
            for future in futures:
                future.result(60)
    finally:
        sys.setswitchinterval(interval)
    assert cache.stats().hits == 4 * 2_000 * 20
