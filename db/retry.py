"""Re-run a unit of work on transient database failures.

``attempt`` is the whole unit of work: the caller's callable checks out a connection,
begins a transaction, runs its statements and commits. A retry re-runs all of it; there
is no resuming half a transaction.

Timing rules:

- Backoff is exponential with full jitter: before retry ``n`` (0-based) we sleep
  ``rand() * min(max_delay, base_delay * 2**n)``.
- Each attempt runs under ``asyncio.timeout(min(attempt_timeout, time left before the
  deadline))``, or a scope that behaves as it does (``timeout_scope``). Cancelling the
  task makes asyncpg send a CancelRequest for the running statement
  (``Protocol._on_waiter_completed`` -> ``_request_cancel`` -> ``Connection._cancel``);
  ``statement_timeout_ms`` gives the engine a server-side ``statement_timeout`` slightly
  above the attempt timeout as a backstop for when that cancel cannot reach the server.
  An attempt that times out is never retried: it raises ``DatabaseTimeoutError`` (kind
  ``attempt``, or ``deadline`` when the deadline had clipped it).
- The total deadline bounds attempts plus sleeps. It is checked before every attempt,
  and no sleep outlasts it: when the backoff delay is not smaller than the time left, we
  stop at once and raise ``DatabaseUnavailableError`` instead of sleeping to the deadline
  for an attempt that would have no time to run. ``deadline=None`` allows every retry.
- Retries exhausted (``max_retries``, or the class's own limit such as one retry for
  55P03) raise ``DatabaseUnavailableError`` from the last error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from db.errors import (
    Category,
    Classification,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    classify,
)

__all__ = [
    "RetryEvent",
    "RetryPolicy",
    "TimeoutScope",
    "run_with_retries",
    "statement_timeout_ms",
]

T = TypeVar("T")


class TimeoutScope(Protocol):
    """What ``run_with_retries`` needs of a timeout: `asyncio.Timeout`'s context and
    `expired`."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def expired(self) -> bool: ...


# 2**62 * base_delay is far above any cap; stops the exponent growing without bound.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 0.1
    max_delay: float = 2.0
    attempt_timeout: float = 30.0
    deadline: float | None = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")
        if self.attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be > 0")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be > 0 or None")

    def backoff(self, retry: int, rand: float) -> float:
        """Delay before retry number ``retry`` (0-based), given ``rand`` in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry, _MAX_EXPONENT))
        return rand * ceiling


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Reported to ``on_retry`` before sleeping ahead of a retry."""

    attempt: int  # the attempt that failed, from 1
    delay: float  # the sleep that follows, in seconds
    elapsed: float  # since the first attempt started
    sqlstate: str | None
    category: Category
    error: BaseException


def statement_timeout_ms(policy: RetryPolicy, *, margin: float = 1.0) -> int:
    """A server-side ``statement_timeout`` (ms) for ``SET LOCAL``, ``margin`` s above the
    attempt timeout so the client-side timeout normally fires first."""
    return int((policy.attempt_timeout + margin) * 1000)


async def run_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    readonly: bool,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[RetryEvent], None] | None = None,
    timeout_scope: Callable[[float], TimeoutScope] = asyncio.timeout,
) -> T:
    """``timeout_scope``: the attempt's timeout, `asyncio.timeout` or one that behaves as
    it does (`Deadlines.timeout`, db/deadlines.py)."""
    start = clock()
    attempts = 0
    retries = 0
    retries_by_class: dict[str | None, int] = {}
    last: tuple[BaseException, Classification] | None = None

    while True:
        elapsed = clock() - start
        remaining = None if policy.deadline is None else policy.deadline - elapsed
        if remaining is not None and remaining <= 0:
            if last is None:  # unreachable with a positive deadline and a sane clock
                raise DatabaseTimeoutError(
                    timeout=policy.deadline, attempts=attempts, elapsed=elapsed, kind="deadline"
                )
            raise _unavailable(last[1], attempts=attempts, elapsed=elapsed) from last[0]

        timeout = (
            policy.attempt_timeout if remaining is None else min(policy.attempt_timeout, remaining)
        )
        clipped = timeout < policy.attempt_timeout
        attempts += 1
        scope = timeout_scope(timeout)
        try:
            async with scope:
                return await attempt()
        except Exception as exc:
            elapsed = clock() - start
            if scope.expired():  # ours fired, whatever the attempt turned it into
                raise DatabaseTimeoutError(
                    timeout=timeout,
                    attempts=attempts,
                    elapsed=elapsed,
                    kind="deadline" if clipped else "attempt",
                    outcome_unknown=not readonly,
                ) from exc

            classification = classify(exc, readonly=readonly)
            if classification.category is Category.FOREIGN:
                raise
            if not classification.retryable:
                raise classification.to_error(attempts=attempts, elapsed=elapsed) from exc

            key = classification.sqlstate
            limit = policy.max_retries
            if classification.retry_limit is not None:
                limit = min(limit, classification.retry_limit)
            if retries >= policy.max_retries or retries_by_class.get(key, 0) >= limit:
                raise _unavailable(classification, attempts=attempts, elapsed=elapsed) from exc

            delay = policy.backoff(retries, rand())
            if policy.deadline is not None and delay >= policy.deadline - elapsed:
                raise _unavailable(classification, attempts=attempts, elapsed=elapsed) from exc

            if on_retry is not None:
                on_retry(
                    RetryEvent(
                        attempt=attempts,
                        delay=delay,
                        elapsed=elapsed,
                        sqlstate=classification.sqlstate,
                        category=classification.category,
                        error=exc,
                    )
                )
            retries += 1
            retries_by_class[key] = retries_by_class.get(key, 0) + 1
            last = (exc, classification)
            await sleep(delay)


def _unavailable(
    classification: Classification, *, attempts: int, elapsed: float
) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        attempts=attempts,
        last_sqlstate=classification.sqlstate,
        elapsed=elapsed,
        outcome_unknown=classification.outcome_unknown,
    )
