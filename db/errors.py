"""Errors raised by the database layer, and the rules that classify driver errors.

Nothing above ``db/`` sees an asyncpg or SQLAlchemy exception: the retry loop translates
them at the boundary (``raise Mapped(...) from exc``). The hierarchy:

    DatabaseError
    ├── DatabaseTimeoutError        an attempt ran out of time; never retried
    ├── DatabaseUnavailableError    retries exhausted, or a write lost its connection
    ├── DatabaseIntegrityError      a constraint was violated (SQLSTATE class 23)
    └── DatabaseQueryError          anything else the database or driver rejected

``classify`` decides by SQLSTATE and exception class, never by message text:

    retried, read or write     40001 serialization failure, 40P01 deadlock,
                               55P03 lock not available (one retry only),
                               57P03 cannot connect now, 53300 too many connections,
                               08001 / 08004 could not connect, connection refused and
                               other connect-time socket errors, pool checkout timeout
    retried for reads only     the connection was lost once the unit of work had started:
                               08003 / 08006 / 08007, 57P01 / 57P02, ConnectionResetError,
                               BrokenPipeError, asyncpg's bare InterfaceError ("connection
                               is closed") and InternalClientError ("another operation is
                               in progress"), a DBAPIError that SQLAlchemy marked
                               ``connection_invalidated``
    never retried              57014 query canceled / statement timeout and any
                               TimeoutError, constraint (23xxx), syntax (42xxx) and every
                               other SQLSTATE, and a write whose connection was lost (it may
                               have committed: ``outcome_unknown=True``)

A failure while obtaining the connection, before the unit of work ran, reaches ``classify``
wrapped in ``CheckoutFailed`` (``Database.run`` wraps it). Nothing of the unit of work was
sent, so every connection-level failure there is retried for reads and writes alike: a
connect that timed out (asyncpg's ``timeout``), a refused connect or a missing Unix socket
(any ``OSError``), 57P03 / 53300, a connection lost during the liveness check. What the
server rejects for good (28P01 bad password, 3D000 no such database) is not retried.

SQLAlchemy's pool checkout timeout (``sqlalchemy.exc.TimeoutError``) is treated as
retryable for reads and writes alike: no connection was obtained, so nothing was sent and
the outcome is known, and a saturated pool is the same "try again shortly" condition as
53300 on the server. If the retries run out it surfaces as ``DatabaseUnavailableError``.

Outside ``CheckoutFailed``, the failures that are ambiguous about when they happened (08006,
a reset connection) are treated as "lost mid-statement": a write is not retried.
"""

from __future__ import annotations

import enum
import errno
import socket
from dataclasses import dataclass
from typing import Literal

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import sqlalchemy.exc

__all__ = [
    "Category",
    "CheckoutFailed",
    "Classification",
    "DatabaseError",
    "DatabaseIntegrityError",
    "DatabaseQueryError",
    "DatabaseTimeoutError",
    "DatabaseUnavailableError",
    "TimeoutKind",
    "classify",
]

TimeoutKind = Literal["attempt", "deadline", "statement"]
"""What ran out: ``attempt`` the per-attempt timeout, ``deadline`` the total deadline
(which had clipped the attempt's timeout), ``statement`` a timeout reported by the server
(57014) or raised by the driver itself (asyncpg's command or connect timeout)."""


class DatabaseError(Exception):
    """Base class of every error raised by ``db/``."""


class DatabaseTimeoutError(DatabaseError):
    def __init__(
        self,
        *,
        timeout: float | None,
        attempts: int,
        elapsed: float,
        kind: TimeoutKind,
        outcome_unknown: bool = False,
    ) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.elapsed = elapsed
        self.kind = kind
        # A write that timed out may have committed.
        self.outcome_unknown = outcome_unknown
        limit = "" if timeout is None else f" of {timeout:g}s"
        super().__init__(
            f"database {kind} timeout{limit} after {attempts} attempt(s), {elapsed:.3f}s"
            + (" (write outcome unknown)" if outcome_unknown else "")
        )


class DatabaseUnavailableError(DatabaseError):
    def __init__(
        self,
        *,
        attempts: int,
        last_sqlstate: str | None,
        elapsed: float = 0.0,
        outcome_unknown: bool = False,
    ) -> None:
        self.attempts = attempts
        self.last_sqlstate = last_sqlstate
        self.elapsed = elapsed
        # The connection was lost under a write, which may have committed.
        self.outcome_unknown = outcome_unknown
        super().__init__(
            f"database unavailable after {attempts} attempt(s), {elapsed:.3f}s"
            f" (last sqlstate {last_sqlstate})"
            + (" (write outcome unknown)" if outcome_unknown else "")
        )


class DatabaseIntegrityError(DatabaseError):
    def __init__(self, *, sqlstate: str | None, constraint: str | None = None) -> None:
        self.sqlstate = sqlstate
        self.constraint = constraint
        super().__init__(f"constraint violation {sqlstate} on {constraint or 'unknown constraint'}")


class DatabaseQueryError(DatabaseError):
    def __init__(self, *, sqlstate: str | None, message: str = "") -> None:
        self.sqlstate = sqlstate
        super().__init__(f"database error {sqlstate}: {message}" if message else sqlstate or "")


class CheckoutFailed(Exception):
    """No connection could be obtained for a unit of work: the pool wait, the connect or the
    liveness check failed. ``error`` (also ``__cause__``) is what failed. Internal to
    ``db/``: the retry loop classifies it and raises a ``DatabaseError`` instead."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(f"no database connection: {type(error).__name__}")


class Category(enum.Enum):
    TRANSIENT = "transient"  # nothing was committed: safe to re-run reads and writes
    CONNECTION_LOST = "connection_lost"  # lost mid-unit: re-run reads only
    TIMEOUT = "timeout"
    INTEGRITY = "integrity"
    QUERY = "query"
    FOREIGN = "foreign"  # not a database error: propagated untouched


@dataclass(frozen=True, slots=True)
class Classification:
    category: Category
    retryable: bool
    sqlstate: str | None = None
    # At most this many retries for this class of error, whatever the policy says.
    retry_limit: int | None = None
    constraint: str | None = None
    outcome_unknown: bool = False
    # Class name of the driver error, for messages; the error itself is chained.
    driver_error: str = ""

    def to_error(self, *, attempts: int, elapsed: float) -> DatabaseError:
        """The error to raise when this failure is not (or no longer) retried."""
        match self.category:
            case Category.TIMEOUT:
                return DatabaseTimeoutError(
                    timeout=None,
                    attempts=attempts,
                    elapsed=elapsed,
                    kind="statement",
                    outcome_unknown=self.outcome_unknown,
                )
            case Category.TRANSIENT | Category.CONNECTION_LOST:
                return DatabaseUnavailableError(
                    attempts=attempts,
                    last_sqlstate=self.sqlstate,
                    elapsed=elapsed,
                    outcome_unknown=self.outcome_unknown,
                )
            case Category.INTEGRITY:
                return DatabaseIntegrityError(sqlstate=self.sqlstate, constraint=self.constraint)
            case Category.QUERY:
                return DatabaseQueryError(sqlstate=self.sqlstate, message=self.driver_error)
            case Category.FOREIGN:
                raise ValueError("a foreign exception has no database error")


_RETRIED = frozenset({"40001", "40P01", "57P03", "53300", "08001", "08004"})
_RETRIED_ONCE = frozenset({"55P03"})
_LOST = frozenset({"08000", "08003", "08006", "08007", "57P01", "57P02"})
_CONNECT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
    }
)


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    sqlalchemy.exc.EmulatedDBAPIException,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)


def _unwrap(exc: BaseException) -> tuple[BaseException, str | None, bool]:
    """Peel SQLAlchemy's wrappers off: (driver error, sqlstate, connection_invalidated).

    ``DBAPIError.orig`` is the dialect's adapted error (``AsyncAdapt_asyncpg_dbapi.Error``,
    which copies ``sqlstate`` and keeps the asyncpg error in ``.orig`` / ``__cause__``).
    """
    invalidated = False
    if isinstance(exc, sqlalchemy.exc.StatementError) and exc.orig is not None:
        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            invalidated = exc.connection_invalidated
        exc = exc.orig
    sqlstate = _sqlstate(exc)
    if isinstance(exc, sqlalchemy.exc.EmulatedDBAPIException):
        inner = exc.orig if exc.orig is not None else exc.__cause__
        if inner is not None:
            exc = inner
            sqlstate = sqlstate or _sqlstate(exc)
    return exc, sqlstate, invalidated


def _sqlstate(exc: BaseException) -> str | None:
    value = getattr(exc, "sqlstate", None)
    return value if isinstance(value, str) else None


def classify(exc: BaseException, *, readonly: bool) -> Classification:
    """Decide whether the unit of work that raised ``exc`` may be re-run."""
    if isinstance(exc, CheckoutFailed):
        return _checkout_failed(exc.error)
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # pool checkout timed out
        return Classification(Category.TRANSIENT, retryable=True)

    driver, sqlstate, invalidated = _unwrap(exc)
    unknown = not readonly
    name = type(driver).__name__

    if sqlstate is not None:
        if sqlstate in _RETRIED:
            return Classification(Category.TRANSIENT, retryable=True, sqlstate=sqlstate)
        if sqlstate in _RETRIED_ONCE:
            return Classification(
                Category.TRANSIENT, retryable=True, sqlstate=sqlstate, retry_limit=1
            )
        if sqlstate in _LOST:
            return _lost(sqlstate, readonly=readonly)
        if sqlstate == "57014":
            return Classification(
                Category.TIMEOUT, retryable=False, sqlstate=sqlstate, outcome_unknown=unknown
            )
        if sqlstate.startswith("23"):
            constraint = getattr(driver, "constraint_name", None)
            return Classification(
                Category.INTEGRITY,
                retryable=False,
                sqlstate=sqlstate,
                constraint=constraint if isinstance(constraint, str) else None,
            )
        if invalidated:
            return _lost(sqlstate, readonly=readonly)
        return Classification(Category.QUERY, retryable=False, sqlstate=sqlstate, driver_error=name)

    # TimeoutError first: it is a subclass of OSError.
    if isinstance(driver, TimeoutError):
        return Classification(Category.TIMEOUT, retryable=False, outcome_unknown=unknown)
    if isinstance(driver, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return _lost(None, readonly=readonly)
    if isinstance(driver, socket.gaierror) or (
        isinstance(driver, OSError) and driver.errno in _CONNECT_ERRNOS
    ):
        return Classification(Category.TRANSIENT, retryable=True)
    if type(driver) is asyncpg.exceptions.InterfaceError or invalidated:
        # The bare class is what asyncpg raises on a closed connection; its subclasses
        # (DataError, ClientConfigurationError, ...) are caller mistakes.
        return _lost(None, readonly=readonly)
    if isinstance(driver, asyncpg.exceptions.InternalClientError):
        # "another operation is in progress": the connection's protocol is still busy,
        # typically consuming the FATAL error of a backend terminated while the
        # connection sat in the pool, before its close is seen. The connection is lost.
        return _lost(None, readonly=readonly)
    if (
        isinstance(
            driver,
            sqlalchemy.exc.SQLAlchemyError
            | sqlalchemy.exc.EmulatedDBAPIException
            | asyncpg.exceptions.PostgresError
            | asyncpg.exceptions.InterfaceError
            | asyncpg.exceptions.InternalClientError
            | OSError,
        )
        or driver is not exc
    ):
        return Classification(Category.QUERY, retryable=False)
    return Classification(Category.FOREIGN, retryable=False)


def _checkout_failed(error: BaseException) -> Classification:
    inner = classify(error, readonly=True)
    if inner.category in (Category.TRANSIENT, Category.CONNECTION_LOST, Category.TIMEOUT) or (
        inner.category is Category.QUERY and isinstance(_unwrap(error)[0], OSError)
    ):
        return Classification(
            Category.TRANSIENT,
            retryable=True,
            sqlstate=inner.sqlstate,
            retry_limit=inner.retry_limit,
            driver_error=type(error).__name__,
        )
    return inner


def _lost(sqlstate: str | None, *, readonly: bool) -> Classification:
    return Classification(
        Category.CONNECTION_LOST,
        retryable=readonly,
        sqlstate=sqlstate,
        outcome_unknown=not readonly,
    )
