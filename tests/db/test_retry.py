from __future__ import annotations

import asyncio
import errno
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from asyncpg import exceptions as pgexc  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)
from sqlalchemy.ext.asyncio import create_async_engine

from db.deadlines import Deadlines
from db.errors import (
    Category,
    DatabaseIntegrityError,
    DatabaseQueryError,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    classify,
)
from db.retry import RetryEvent, RetryPolicy, run_with_retries, statement_timeout_ms

if TYPE_CHECKING:  # imported at run time, pytest would try to collect the class
    from tests.pg import TestServer

# --- realistic exceptions ------------------------------------------------------------

_DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call, unused-ignore]


def pg(cls: type[Exception], **fields: Any) -> Exception:
    """An asyncpg error as the driver raises it (server fields set as attributes)."""
    exc = cls(f"{cls.__name__} raised by a test")
    for name, value in fields.items():
        setattr(exc, name, value)
    return exc


def wrapped(exc: Exception, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    """``exc`` as SQLAlchemy raises it: adapted by the asyncpg dialect, then wrapped the
    way ``Connection._handle_dbapi_exception`` wraps it (``raise ... from adapted``)."""
    try:
        try:
            raise exc
        except Exception as raw:
            AsyncAdapt_asyncpg_connection._handle_exception_no_connection(_DBAPI, raw)
    except _DBAPI.Error as adapted:
        out = sqlalchemy.exc.DBAPIError.instance(
            "SELECT 1", {}, adapted, _DBAPI.Error, connection_invalidated=invalidated
        )
        assert isinstance(out, sqlalchemy.exc.DBAPIError)
        out.__cause__ = adapted
        return out
    raise AssertionError("the dialect did not adapt the error")


def both(name: str, make: Callable[[], Exception]) -> list[Any]:
    """The raw asyncpg error and its SQLAlchemy-wrapped form, as two parameters."""
    return [
        pytest.param(make, id=f"{name}-raw"),
        pytest.param(lambda: wrapped(make()), id=f"{name}-sqlalchemy"),
    ]


# --- fakes -------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


Outcome = Callable[[], BaseException] | str


class Script:
    """An attempt that plays ``outcomes`` in order (the last one repeats); each call
    costs ``cost`` seconds of fake time. A callable outcome makes the exception raised."""

    def __init__(self, time: FakeTime, *outcomes: Outcome, cost: float = 0.0) -> None:
        self.time = time
        self.outcomes = outcomes
        self.cost = cost
        self.calls = 0

    async def __call__(self) -> str:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        self.time.now += self.cost
        if callable(outcome):
            raise outcome()
        return outcome


async def run(
    script: Script,
    time: FakeTime,
    *,
    policy: RetryPolicy | None = None,
    readonly: bool = True,
    rand: Callable[[], float] = lambda: 0.5,
    events: list[RetryEvent] | None = None,
) -> str:
    return await run_with_retries(
        script,
        policy=policy or RetryPolicy(),
        readonly=readonly,
        clock=time.clock,
        sleep=time.sleep,
        rand=rand,
        on_retry=None if events is None else events.append,
    )


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


RETRYABLE = [
    *both("40001", lambda: pg(pgexc.SerializationError)),
    *both("40P01", lambda: pg(pgexc.DeadlockDetectedError)),
    *both("57P03", lambda: pg(pgexc.CannotConnectNowError)),
    *both("53300", lambda: pg(pgexc.TooManyConnectionsError)),
    *both("08001", lambda: pg(pgexc.ClientCannotConnectError)),
    *both("08004", lambda: pg(pgexc.ConnectionRejectionError)),
    pytest.param(lambda: ConnectionRefusedError(errno.ECONNREFUSED, "refused"), id="refused"),
    pytest.param(lambda: OSError(errno.EHOSTUNREACH, "no route"), id="unreachable"),
    pytest.param(lambda: socket.gaierror(socket.EAI_NONAME, "unknown host"), id="dns"),
    pytest.param(lambda: sqlalchemy.exc.TimeoutError("QueuePool limit"), id="pool-checkout"),
]

LOST = [
    *both("08003", lambda: pg(pgexc.ConnectionDoesNotExistError)),
    *both("08006", lambda: pg(pgexc.ConnectionFailureError)),
    *both("57P01", lambda: pg(pgexc.AdminShutdownError)),
    pytest.param(
        lambda: wrapped(pg(pgexc.ConnectionDoesNotExistError), invalidated=True),
        id="08003-invalidated",
    ),
    pytest.param(
        lambda: wrapped(pgexc.InterfaceError("cannot perform operation: connection is closed")),
        id="interface-closed",
    ),
    pytest.param(
        lambda: pgexc.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        id="protocol-busy",
    ),
    pytest.param(lambda: ConnectionResetError(errno.ECONNRESET, "reset"), id="reset"),
    pytest.param(lambda: BrokenPipeError(errno.EPIPE, "pipe"), id="broken-pipe"),
]


# --- the rules ---------------------------------------------------------------------------


async def test_success_first_time(time: FakeTime) -> None:
    script = Script(time, "ok")
    events: list[RetryEvent] = []

    assert await run(script, time, events=events) == "ok"
    assert script.calls == 1
    assert time.sleeps == []
    assert events == []


@pytest.mark.parametrize("readonly", [True, False], ids=["read", "write"])
@pytest.mark.parametrize("make", RETRYABLE)
async def test_transient_error_retried_then_succeeds(
    time: FakeTime, make: Callable[[], Exception], readonly: bool
) -> None:
    script = Script(time, make, "ok")
    events: list[RetryEvent] = []

    assert await run(script, time, readonly=readonly, events=events) == "ok"
    assert script.calls == 2
    assert time.sleeps == [pytest.approx(0.05)]
    assert [(e.attempt, e.category) for e in events] == [(1, Category.TRANSIENT)]
    assert events[0].delay == pytest.approx(0.05)


async def test_exhaustion_reports_attempts_and_last_sqlstate(time: FakeTime) -> None:
    errors = [
        lambda: wrapped(pg(pgexc.DeadlockDetectedError)),
        lambda: wrapped(pg(pgexc.SerializationError)),
    ]
    raised: list[BaseException] = []

    def last_serialization() -> BaseException:
        raised.append(errors[1]())
        return raised[-1]

    script = Script(time, errors[0], last_serialization)

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time)

    assert info.value.attempts == 6
    assert info.value.last_sqlstate == "40001"
    assert info.value.outcome_unknown is False
    assert info.value.__cause__ is raised[-1]
    assert script.calls == 6
    assert len(time.sleeps) == 5


async def test_zero_retries_raises_after_one_attempt(time: FakeTime) -> None:
    script = Script(time, lambda: pg(pgexc.SerializationError))

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time, policy=RetryPolicy(max_retries=0))

    assert info.value.attempts == 1
    assert time.sleeps == []


@pytest.mark.parametrize("readonly", [True, False], ids=["read", "write"])
@pytest.mark.parametrize(
    ("make", "expected", "sqlstate"),
    [
        *[
            pytest.param(p.values[0], DatabaseIntegrityError, "23505", id=p.id)
            for p in both(
                "unique", lambda: pg(pgexc.UniqueViolationError, constraint_name="users_pkey")
            )
        ],
        *[
            pytest.param(p.values[0], DatabaseQueryError, "42601", id=p.id)
            for p in both("syntax", lambda: pg(pgexc.PostgresSyntaxError))
        ],
        *[
            pytest.param(p.values[0], DatabaseTimeoutError, "57014", id=p.id)
            for p in both("57014", lambda: pg(pgexc.QueryCanceledError))
        ],
    ],
)
async def test_non_retryable_raised_at_once(
    time: FakeTime,
    make: Callable[[], Exception],
    expected: type[Exception],
    sqlstate: str,
    readonly: bool,
) -> None:
    script = Script(time, make, "ok")

    with pytest.raises(expected) as info:
        await run(script, time, readonly=readonly)

    assert script.calls == 1
    assert time.sleeps == []
    assert classify(info.value.__cause__ or info.value, readonly=readonly).sqlstate == sqlstate
    if isinstance(info.value, DatabaseIntegrityError):
        assert info.value.sqlstate == "23505"
        assert info.value.constraint == "users_pkey"
    elif isinstance(info.value, DatabaseQueryError):
        assert info.value.sqlstate == "42601"
    elif isinstance(info.value, DatabaseTimeoutError):
        assert info.value.kind == "statement"
        assert info.value.outcome_unknown is not readonly


async def test_backoff_is_exponential_with_full_jitter_and_capped(time: FakeTime) -> None:
    script = Script(time, lambda: pg(pgexc.SerializationError))
    policy = RetryPolicy(max_retries=7, base_delay=0.1, max_delay=2.0, deadline=None)

    with pytest.raises(DatabaseUnavailableError):
        await run(script, time, policy=policy, rand=lambda: 0.5)

    assert time.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


async def test_jitter_scales_each_delay_by_rand(time: FakeTime) -> None:
    draws: Iterator[float] = iter([0.0, 0.25, 0.999])
    script = Script(
        time,
        lambda: pg(pgexc.SerializationError),
        lambda: pg(pgexc.SerializationError),
        lambda: pg(pgexc.SerializationError),
        "ok",
    )

    assert await run(script, time, rand=lambda: next(draws)) == "ok"
    assert time.sleeps == pytest.approx([0.0, 0.25 * 0.2, 0.999 * 0.4])


def test_backoff_does_not_overflow() -> None:
    assert RetryPolicy().backoff(100_000, 1.0) == 2.0


async def test_deadline_stops_retries_and_no_sleep_passes_it(time: FakeTime) -> None:
    start = time.now
    policy = RetryPolicy(deadline=1.0)
    ends: list[float] = []

    async def sleep(delay: float) -> None:
        await time.sleep(delay)
        ends.append(time.now)

    script = Script(time, lambda: pg(pgexc.SerializationError), cost=0.2)

    with pytest.raises(DatabaseUnavailableError) as info:
        await run_with_retries(
            script, policy=policy, readonly=True, clock=time.clock, sleep=sleep, rand=lambda: 1.0
        )

    # 0.2 run, 0.1 sleep, 0.2 run, 0.2 sleep, 0.2 run: a 0.4 sleep would pass the deadline.
    assert time.sleeps == pytest.approx([0.1, 0.2])
    assert script.calls == 3
    assert info.value.attempts == 3
    assert info.value.last_sqlstate == "40001"
    assert info.value.elapsed == pytest.approx(0.9)
    assert all(end - start < policy.deadline for end in ends)  # type: ignore[operator]


async def test_deadline_checked_before_every_attempt(time: FakeTime) -> None:
    """A sleep that overruns (a busy loop) leaves no time: no further attempt starts."""

    async def oversleep(delay: float) -> None:
        await time.sleep(delay + 5.0)

    script = Script(time, lambda: pg(pgexc.SerializationError), "ok")

    with pytest.raises(DatabaseUnavailableError) as info:
        await run_with_retries(
            script,
            policy=RetryPolicy(deadline=1.0),
            readonly=True,
            clock=time.clock,
            sleep=oversleep,
            rand=lambda: 0.5,
        )

    assert script.calls == 1
    assert info.value.attempts == 1


async def test_none_deadline_allows_all_retries(time: FakeTime) -> None:
    policy = RetryPolicy(max_retries=5, deadline=None)
    failing = [lambda: pg(pgexc.SerializationError)] * 5
    script = Script(time, *failing, "ok", cost=1000.0)

    assert await run(script, time, policy=policy) == "ok"
    assert script.calls == 6


SCOPES = pytest.mark.parametrize(
    "scope", [asyncio.timeout, "deadlines"], ids=["asyncio.timeout", "Deadlines"]
)


def timeout_scope(scope: Any) -> Any:
    return Deadlines().timeout if scope == "deadlines" else scope


@SCOPES
async def test_deadline_clips_the_attempt_timeout(time: FakeTime, scope: Any) -> None:
    """Time left before the deadline becomes the attempt's timeout (here 0.1 ms, real)."""
    never = asyncio.Event()
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.now += 60.0 - 1e-4
            raise pg(pgexc.SerializationError)
        await never.wait()
        return "unreachable"

    with pytest.raises(DatabaseTimeoutError) as info:
        await run_with_retries(
            attempt,
            policy=RetryPolicy(attempt_timeout=30.0, deadline=60.0),
            readonly=True,
            clock=time.clock,
            sleep=time.sleep,
            rand=lambda: 0.0,
            timeout_scope=timeout_scope(scope),
        )

    assert info.value.kind == "deadline"
    assert info.value.timeout == pytest.approx(1e-4)
    assert info.value.attempts == 2
    assert isinstance(info.value.__cause__, TimeoutError)


@SCOPES
@pytest.mark.parametrize("readonly", [True, False], ids=["read", "write"])
async def test_attempt_timeout_is_never_retried(time: FakeTime, readonly: bool, scope: Any) -> None:
    never = asyncio.Event()
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        await never.wait()
        return "unreachable"

    with pytest.raises(DatabaseTimeoutError) as info:
        await run_with_retries(
            attempt,
            policy=RetryPolicy(attempt_timeout=1e-4),
            readonly=readonly,
            clock=time.clock,
            sleep=time.sleep,
            timeout_scope=timeout_scope(scope),
        )

    assert calls == 1
    assert time.sleeps == []
    assert info.value.kind == "attempt"
    assert info.value.attempts == 1
    assert info.value.outcome_unknown is not readonly


@pytest.mark.parametrize("readonly", [True, False], ids=["read", "write"])
async def test_driver_timeout_is_never_retried(time: FakeTime, readonly: bool) -> None:
    """asyncpg's own command timeout raises a bare TimeoutError, unwrapped by SQLAlchemy."""
    script = Script(time, TimeoutError, "ok")

    with pytest.raises(DatabaseTimeoutError) as info:
        await run(script, time, readonly=readonly)

    assert script.calls == 1
    assert info.value.kind == "statement"
    assert info.value.outcome_unknown is not readonly


@pytest.mark.parametrize("make", LOST)
async def test_lost_connection_retried_for_a_read(
    time: FakeTime, make: Callable[[], Exception]
) -> None:
    script = Script(time, make, "ok")
    events: list[RetryEvent] = []

    assert await run(script, time, readonly=True, events=events) == "ok"
    assert script.calls == 2
    assert events[0].category is Category.CONNECTION_LOST


@pytest.mark.parametrize("make", LOST)
async def test_lost_connection_never_retried_for_a_write(
    time: FakeTime, make: Callable[[], Exception]
) -> None:
    script = Script(time, make, "ok")

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time, readonly=False)

    assert script.calls == 1
    assert time.sleeps == []
    assert info.value.outcome_unknown is True
    assert info.value.attempts == 1


async def test_write_lost_after_a_retry_reports_every_attempt(time: FakeTime) -> None:
    script = Script(
        time,
        lambda: wrapped(pg(pgexc.SerializationError)),
        lambda: wrapped(pg(pgexc.ConnectionDoesNotExistError), invalidated=True),
    )

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time, readonly=False)

    assert info.value.attempts == 2
    assert info.value.last_sqlstate == "08003"
    assert info.value.outcome_unknown is True


async def test_lock_not_available_retried_once(time: FakeTime) -> None:
    script = Script(time, lambda: wrapped(pg(pgexc.LockNotAvailableError)))

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time)

    assert script.calls == 2
    assert info.value.attempts == 2
    assert info.value.last_sqlstate == "55P03"


async def test_lock_not_available_once_across_other_retries(time: FakeTime) -> None:
    script = Script(
        time,
        lambda: pg(pgexc.LockNotAvailableError),
        lambda: pg(pgexc.SerializationError),
        lambda: pg(pgexc.LockNotAvailableError),
        "ok",
    )

    with pytest.raises(DatabaseUnavailableError) as info:
        await run(script, time)

    assert script.calls == 3
    assert info.value.last_sqlstate == "55P03"


async def test_lock_not_available_then_success(time: FakeTime) -> None:
    script = Script(time, lambda: pg(pgexc.LockNotAvailableError), "ok")

    assert await run(script, time) == "ok"


async def test_foreign_exception_propagates_untouched(time: FakeTime) -> None:
    bug = KeyError("title")
    script = Script(time, lambda: bug, "ok")

    with pytest.raises(KeyError) as info:
        await run(script, time)

    assert info.value is bug
    assert script.calls == 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: pgexc.DataError("invalid input for query argument"), id="data"),
        pytest.param(lambda: wrapped(pgexc.DataError("bad argument")), id="data-sqlalchemy"),
        pytest.param(lambda: sqlalchemy.exc.ResourceClosedError("closed"), id="sqlalchemy"),
        pytest.param(lambda: PermissionError(errno.EACCES, "socket"), id="os"),
    ],
)
async def test_other_driver_errors_become_query_errors(
    time: FakeTime, make: Callable[[], Exception]
) -> None:
    script = Script(time, make, "ok")

    with pytest.raises(DatabaseQueryError):
        await run(script, time)

    assert script.calls == 1


async def test_on_retry_reports_each_retry(time: FakeTime) -> None:
    error = wrapped(pg(pgexc.DeadlockDetectedError))
    script = Script(time, lambda: error, lambda: pg(pgexc.CannotConnectNowError), "ok", cost=0.5)
    events: list[RetryEvent] = []

    assert await run(script, time, events=events, rand=lambda: 1.0) == "ok"
    assert [(e.attempt, e.sqlstate, e.category) for e in events] == [
        (1, "40P01", Category.TRANSIENT),
        (2, "57P03", Category.TRANSIENT),
    ]
    assert [e.delay for e in events] == pytest.approx([0.1, 0.2])
    assert [e.elapsed for e in events] == pytest.approx([0.5, 1.1])
    assert events[0].error is error
    assert isinstance(events[1].error, pgexc.CannotConnectNowError)


async def test_outer_cancellation_is_not_swallowed(time: FakeTime) -> None:
    started = asyncio.Event()

    async def attempt() -> str:
        started.set()
        await asyncio.Event().wait()
        return "unreachable"

    task = asyncio.create_task(
        run_with_retries(attempt, policy=RetryPolicy(), readonly=True, clock=time.clock)
    )
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


def test_statement_timeout_is_just_above_the_attempt_timeout() -> None:
    assert statement_timeout_ms(RetryPolicy(attempt_timeout=30.0)) == 31_000
    assert statement_timeout_ms(RetryPolicy(attempt_timeout=0.5), margin=0.25) == 750


@pytest.mark.parametrize(
    "fields",
    [
        {"max_retries": -1},
        {"base_delay": -0.1},
        {"max_delay": -1.0},
        {"attempt_timeout": 0.0},
        {"deadline": 0.0},
    ],
)
def test_policy_rejects_nonsense(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)


# --- against a real PostgreSQL ----------------------------------------------------------


async def test_real_serialization_failure_is_classified_and_retried(
    pg_server: TestServer,
) -> None:
    engine = create_async_engine(pg_server.url)
    table = f"retry_probe_{uuid.uuid4().hex[:12]}"
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)"))
            await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))

        calls = 0
        seen: list[RetryEvent] = []

        async def increment() -> int:
            nonlocal calls
            calls += 1
            async with engine.connect() as conn:
                await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                await conn.execute(sa.text(f"SELECT n FROM {table}"))  # takes the snapshot
                if calls == 1:  # a concurrent writer commits under our snapshot
                    async with engine.begin() as other:
                        await other.execute(sa.text(f"UPDATE {table} SET n = n + 1"))
                result = await conn.execute(sa.text(f"UPDATE {table} SET n = n + 1 RETURNING n"))
                await conn.commit()
                return int(result.scalar_one())

        assert (
            await run_with_retries(
                increment, policy=RetryPolicy(), readonly=False, on_retry=seen.append
            )
            == 2
        )
        assert calls == 2
        assert [e.sqlstate for e in seen] == ["40001"]
        assert isinstance(seen[0].error, sqlalchemy.exc.DBAPIError)
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()


async def test_real_unique_violation_names_the_constraint(pg_server: TestServer) -> None:
    engine = create_async_engine(pg_server.url)
    try:

        async def insert_twice() -> None:
            async with engine.connect() as conn:
                await conn.execute(
                    sa.text("CREATE TEMP TABLE probe (id int CONSTRAINT probe_pk PRIMARY KEY)")
                )
                await conn.execute(sa.text("INSERT INTO probe VALUES (1), (1)"))

        with pytest.raises(DatabaseIntegrityError) as info:
            await run_with_retries(insert_twice, policy=RetryPolicy(), readonly=False)

        assert info.value.sqlstate == "23505"
        assert info.value.constraint == "probe_pk"
        assert isinstance(info.value.__cause__, sqlalchemy.exc.IntegrityError)
    finally:
        await engine.dispose()


async def test_real_attempt_timeout_cancels_the_statement_on_the_server(
    pg_server: TestServer,
) -> None:
    engine = create_async_engine(pg_server.url)
    tag = f"retry_probe_{uuid.uuid4().hex[:12]}"
    try:

        async def slow() -> None:
            async with engine.connect() as conn:
                await conn.execute(sa.text(f"SELECT pg_sleep(30) /* {tag} */"))

        with pytest.raises(DatabaseTimeoutError) as info:
            await run_with_retries(slow, policy=RetryPolicy(attempt_timeout=0.2), readonly=True)
        assert info.value.kind == "attempt"

        async with engine.connect() as watcher:
            for _ in range(50):
                running = await watcher.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE :tag AND pid <> pg_backend_pid()"
                    ),
                    {"tag": f"%{tag}%"},
                )
                await watcher.rollback()  # a fresh snapshot of pg_stat_activity
                if running == 0:
                    break
                await asyncio.sleep(0.05)
        assert running == 0, "pg_sleep still running on the server"
    finally:
        await engine.dispose()
