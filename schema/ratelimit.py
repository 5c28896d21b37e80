"""A per-client budget of query cost: token buckets in a bounded, least-recently-used map."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: float
    retry_after: int  # seconds until the charge would fit; 0 when allowed


class RateLimiter:
    """`budget` cost points per `period` seconds per key, refilled continuously.

    Keys are kept for at most `max_keys` clients (least recently seen dropped first): a
    dropped client starts again with a full bucket, which only ever errs toward allowing.
    """

    def __init__(
        self,
        *,
        budget: float,
        period: float = 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget <= 0 or period <= 0:
            raise ValueError("budget and period must be positive")
        self._budget = budget
        self._rate = budget / period
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.rejections = 0

    def charge(self, key: str, cost: float) -> Decision:
        now = self._clock()
        with self._lock:
            level, seen = self._buckets.pop(key, (self._budget, now))
            level = min(self._budget, level + (now - seen) * self._rate)
            if cost <= level:
                level -= cost
                decision = Decision(allowed=True, remaining=level, retry_after=0)
            else:
                self.rejections += 1
                wait = (min(cost, self._budget) - level) / self._rate
                decision = Decision(allowed=False, remaining=level, retry_after=math.ceil(wait))
            self._buckets[key] = (level, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return decision
