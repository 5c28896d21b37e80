"""Timeouts for the database's attempts at the price of a dict entry each, not a timer each.

`asyncio.timeout` arms a loop timer on entry and cancels it on exit; under uvloop that is
a libuv timer made and closed per use, 4.7 µs of CPU with its bookkeeping, about 3 % of a
W3 request's (bench/RESULTS.md, ninth session). Every read runs under one. `Deadlines`
keeps one timer per loop for all the attempts in flight, armed at the earliest deadline
among them. When it fires, it cancels the tasks whose deadlines have passed and arms
itself for the earliest deadline left. Attempts mostly end long before their deadline,
and later attempts have later deadlines, so the timer fires about once per timeout
period, whatever the request rate; entering and leaving a scope is an insert and a
delete.

A scope behaves as `asyncio.timeout`'s: when its deadline passes, its task is cancelled;
leaving the scope turns that CancelledError into TimeoutError (and uncancels the task),
and `expired()` says so. A cancellation from elsewhere passes through untouched.

One loop at a time, as the engine's connections are: a scope entered on another loop
than the last one's starts afresh there (a closed loop's scopes are forgotten).
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

__all__ = ["DeadlineScope", "Deadlines"]


class Deadlines:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scopes: dict[DeadlineScope, None] = {}  # in flight, in order of entry
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def timeout(self, delay: float) -> DeadlineScope:
        """A scope that times out `delay` seconds after it is entered."""
        return DeadlineScope(self, delay)

    def __len__(self) -> int:
        return len(self._scopes)

    def _enter(self, scope: DeadlineScope) -> asyncio.Task[object]:
        loop = self._loop
        task = None if loop is None or loop.is_closed() else asyncio.current_task(loop)
        if task is None:  # first use, or another loop's
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                self._bind(loop)
            task = asyncio.current_task(loop)
            if task is None:
                raise RuntimeError("a deadline scope is used inside a task")
        assert loop is not None
        scope.when = when = loop.time() + scope.delay
        self._scopes[scope] = None
        if when < self._armed_at:
            self._arm(loop, when)
        return task

    def _leave(self, scope: DeadlineScope) -> None:
        self._scopes.pop(scope, None)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._scopes, self._timer, self._armed_at = loop, {}, None, math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        loop = self._loop
        assert loop is not None  # armed only on the bound loop; binding cancels it
        now = loop.time()
        due = [s for s in self._scopes if s.when <= now]
        for scope in due:
            del self._scopes[scope]
            scope.expire()
        if self._scopes:
            self._arm(loop, min(s.when for s in self._scopes))


class DeadlineScope:
    """`async with deadlines.timeout(delay):` as `async with asyncio.timeout(delay):`."""

    __slots__ = ("_cancelling", "_expired", "_owner", "_task", "delay", "when")

    def __init__(self, owner: Deadlines, delay: float) -> None:
        self._owner = owner
        self.delay = delay
        self.when = math.inf
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._expired = False

    def expired(self) -> bool:
        """Whether the deadline passed and this scope cancelled its task."""
        return self._expired

    def expire(self) -> None:
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aenter__(self) -> DeadlineScope:
        if self._task is not None:
            raise RuntimeError("a deadline scope is entered once")
        self._task = self._owner._enter(self)
        self._cancelling = self._task.cancelling()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._leave(self)
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
