"""Benchmark ShardedTTLCache against a dict, a sort-on-overflow cache and cachetools.

Run: python bench/cache_bench.py. Prints figures and ratios; it never passes or fails.
Every cache reads the same virtual clock, advanced once per operation, so expiry is
deterministic and no implementation pays for a different clock.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TTLCache

from cache import ShardedTTLCache

SEED = 42
ZIPF_S = 1.1
KEY_SPACE = 10_000
OPS = 200_000
INSERT_OPS = 50_000  # the sort-on-overflow baseline is too slow for OPS
MAX_ENTRIES = 1_000
SHARDS = 16
TTL = 3.0
TICK = TTL / 20_000  # an entry expires 20,000 operations after its last set
REPEATS = 3


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SortingTTLCache:
    """The naive baseline: on overflow, sort every entry by expiry and drop from the front."""

    def __init__(self, *, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self._entries: dict[Hashable, tuple[float, object]] = {}
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock

    def set(self, key: Hashable, value: object) -> None:
        now = self._clock()
        entries = self._entries
        if key not in entries and len(entries) >= self._max_entries:
            by_expiry = sorted(entries.items(), key=lambda item: item[1][0])
            # Drop the nearest expiry, then every other expired entry.
            for index, (stale, (expires_at, _)) in enumerate(by_expiry):
                if index and expires_at > now:
                    break
                del entries[stale]
        entries[key] = (now + self._ttl, value)


class LockedTTLCache:
    """cachetools.TTLCache behind one threading.Lock, as a thread-safe caller must use it."""

    def __init__(self, *, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self._cache: TTLCache[Hashable, object] = TTLCache(max_entries, ttl, timer=clock)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bool, object]:
        with self._lock:
            value = self._cache.get(key, _MISSING)
        return (False, None) if value is _MISSING else (True, value)

    def set(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._cache[key] = value


_MISSING = object()


def zipf_keys(space: int, count: int, rng: random.Random) -> list[int]:
    weights = [1 / k**ZIPF_S for k in range(1, space + 1)]
    # Shuffle ranks onto keys so popularity is not correlated with the shard index.
    keys = list(range(space))
    rng.shuffle(keys)
    return rng.choices(keys, weights, k=count)


def best_ns(run: Callable[[], None]) -> int:
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        run()
        timings.append(time.perf_counter_ns() - start)
    return min(timings)


def line(name: str, elapsed_ns: int, ops: int) -> float:
    per_op = elapsed_ns / ops
    print(f"    {name:<44}{per_op:10.1f} ns/op {1e9 / per_op:14,.0f} ops/s")
    return per_op


def ratio(name: str, numerator: float, denominator: float) -> None:
    print(f"    ratio {name:<38}{numerator / denominator:10.2f}x")


def sharded(clock: VirtualClock) -> ShardedTTLCache[Hashable, object]:
    return ShardedTTLCache(shards=SHARDS, max_entries=MAX_ENTRIES, ttl=TTL, clock=clock)


def hit_path(rng: random.Random) -> None:
    keys = zipf_keys(MAX_ENTRIES, OPS, rng)
    print(
        f"(a) hit path: {MAX_ENTRIES:,} cached keys (all resident), "
        f"{OPS:,} Zipf(s={ZIPF_S}) lookups"
    )
    clock = VirtualClock()  # never advanced: every lookup is a hit
    cache = sharded(clock)
    plain: dict[Hashable, object] = {}
    locked = LockedTTLCache(max_entries=MAX_ENTRIES, ttl=TTL, clock=clock)
    for key in range(MAX_ENTRIES):
        cache.set(key, key)
        plain[key] = key
        locked.set(key, key)
    assert len(cache) == MAX_ENTRIES

    def run_dict() -> None:
        get = plain.get
        for key in keys:
            get(key)

    def run_get() -> None:
        get = cache.get
        for key in keys:
            get(key)

    async def load() -> object:
        raise AssertionError("the hit path never loads")

    async def run_get_or_load_async() -> None:
        get_or_load = cache.get_or_load
        for key in keys:
            await get_or_load(key, load)

    def run_get_or_load() -> None:
        asyncio.run(run_get_or_load_async())

    def run_locked() -> None:
        get = locked.get
        for key in keys:
            get(key)

    dict_ns = line("dict.get", best_ns(run_dict), OPS)
    get_ns = line("ShardedTTLCache.get", best_ns(run_get), OPS)
    load_ns = line("ShardedTTLCache.get_or_load (await, hit)", best_ns(run_get_or_load), OPS)
    locked_ns = line("cachetools.TTLCache + Lock .get", best_ns(run_locked), OPS)
    ratio("ShardedTTLCache.get / dict.get", get_ns, dict_ns)
    ratio("get_or_load hit / dict.get", load_ns, dict_ns)
    ratio("ShardedTTLCache.get / TTLCache+Lock", get_ns, locked_ns)
    stats = cache.stats()
    print(f"    sharded stats, all runs: hits={stats.hits:,} misses={stats.misses:,}")


def insert_path(rng: random.Random) -> None:
    keys = zipf_keys(KEY_SPACE, INSERT_OPS, rng)
    print(
        f"(b) inserts past the bound: key space {KEY_SPACE:,}, bound {MAX_ENTRIES:,}, "
        f"{INSERT_OPS:,} Zipf(s={ZIPF_S}) sets, clock +{TICK * 1e6:.0f} us/op (TTL {TTL} s)"
    )
    last: dict[str, Any] = {}

    def runner(make: Callable[[VirtualClock], Any], name: str) -> Callable[[], None]:
        def run() -> None:
            clock = VirtualClock()
            cache = make(clock)
            for key in range(MAX_ENTRIES):  # start full, so every new key evicts
                cache.set(-1 - key, key)
            set_ = cache.set
            for key in keys:
                clock.now += TICK
                set_(key, key)
            last[name] = cache

        return run

    naive = runner(lambda c: SortingTTLCache(max_entries=MAX_ENTRIES, ttl=TTL, clock=c), "naive")
    sharded_ns = line("ShardedTTLCache.set", best_ns(runner(sharded, "sharded")), INSERT_OPS)
    naive_ns = line("sort-on-overflow baseline .set", best_ns(naive), INSERT_OPS)
    locked = runner(lambda c: LockedTTLCache(max_entries=MAX_ENTRIES, ttl=TTL, clock=c), "lock")
    locked_ns = line("cachetools.TTLCache + Lock .set", best_ns(locked), INSERT_OPS)
    ratio("sort-on-overflow / ShardedTTLCache", naive_ns, sharded_ns)
    ratio("TTLCache+Lock / ShardedTTLCache", locked_ns, sharded_ns)
    stats = last["sharded"].stats()
    print(
        f"    sharded stats: size={stats.size:,} evictions expired={stats.expired_evictions:,}"
        f" capacity={stats.capacity_evictions:,}"
    )


def read_through(rng: random.Random) -> None:
    keys = zipf_keys(KEY_SPACE, OPS, rng)
    print(
        f"(c) read-through (get, set on miss): key space {KEY_SPACE:,}, bound {MAX_ENTRIES:,},"
        f" {OPS:,} Zipf(s={ZIPF_S}) ops, one thread"
    )
    last: dict[str, Any] = {}

    def runner(make: Callable[[VirtualClock], Any], name: str) -> Callable[[], None]:
        def run() -> None:
            clock = VirtualClock()
            cache = make(clock)
            get, set_ = cache.get, cache.set
            for key in keys:
                clock.now += TICK
                if not get(key)[0]:
                    set_(key, key)
            last[name] = cache

        return run

    sharded_ns = line("ShardedTTLCache", best_ns(runner(sharded, "sharded")), OPS)
    locked = runner(lambda c: LockedTTLCache(max_entries=MAX_ENTRIES, ttl=TTL, clock=c), "lock")
    locked_ns = line("cachetools.TTLCache + one Lock", best_ns(locked), OPS)
    ratio("TTLCache+Lock / ShardedTTLCache", locked_ns, sharded_ns)
    stats = last["sharded"].stats()
    print(
        f"    sharded: hit ratio {stats.hits / (stats.hits + stats.misses):.1%}, evictions"
        f" expired={stats.expired_evictions:,} capacity={stats.capacity_evictions:,}"
    )


def main() -> None:
    started = time.perf_counter()
    print(f"ShardedTTLCache bench: seed {SEED}, best of {REPEATS} runs, {SHARDS} shards")
    for section in (hit_path, insert_path, read_through):
        section(random.Random(SEED))
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
