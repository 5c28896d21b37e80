"""Run a read's statement on the connection's asyncpg driver, past SQLAlchemy's execute.

`AsyncConnection.execute` costs about 125 µs of CPU per statement more than asyncpg's own
`fetch` on the same checked-out connection (`Database.read` of the W3 page: 350 against
225 µs): a greenlet switch, the statement's cache key, an execution context, Row objects.
The hot statements are built once per shape (db/vods.py and the others), so `fetch`
compiles each one once with the engine's dialect and keeps its SQL text, its parameter
order, defaults and bind processors; asyncpg prepares it once per connection. Rows come
back as `Record`s: asyncpg records whose columns also read as attributes, as SQLAlchemy's
rows do.

What SQLAlchemy does around a statement is kept:

- the engine's `before_cursor_execute` and `after_cursor_execute` listeners run (the
  slow-query log, the tests' statement counter);
- a statement cancelled by the attempt's timeout closes its connection within
  `CANCEL_GRACE` (`close_within`, as db/engine.py's `handle_error` hook does), and it is
  invalidated so the pool replaces it; a statement that failed otherwise drops its
  connection at once (errors are rare; a connection whose protocol is still consuming
  one would refuse its next statement);
- errors leave as asyncpg raised them, which `classify` (db/errors.py) reads.

A statement this cannot run exactly (a column that needs a result processor, a parameter
that expands or renders at execution time) is refused when first compiled, with
`ValueError`: it belongs on `conn.execute`.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.sql.selectable import CompoundSelect

from db.engine import CANCEL_GRACE, close_within

# A SELECT (or UNION) of any columns.
AnySelect = Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]]
_REQUIRED = object()


class Record(asyncpg.Record):  # type: ignore[misc]
    """A row: `row.title`, `row["title"]` and `row[2]` all read the column."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def record_class(keys: Sequence[str]) -> type[Record]:
    """A `Record` whose columns are properties reading by position, in C (`itemgetter`):
    no Python frame per attribute, as `__getattr__` costs. Names that Record already has
    (`keys`, `get`, ...) keep their meaning and stay readable as `row["name"]`."""
    if len(set(keys)) != len(keys):
        return Record  # duplicate names: by name, as asyncpg resolves them
    namespace: dict[str, Any] = {"__slots__": ()}
    for index, key in enumerate(keys):
        if key.isidentifier() and not hasattr(Record, key):
            namespace[key] = property(operator.itemgetter(index))
    return type("Record", (Record,), namespace)


@dataclass(frozen=True, slots=True)
class _Parameter:
    name: str
    default: Any  # _REQUIRED: the caller passes it
    process: Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    parameters: tuple[_Parameter, ...]
    record: type[Record]  # its rows' class: the selected columns as properties

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for p in self.parameters:
            value = params[p.name] if p.default is _REQUIRED else params.get(p.name, p.default)
            values.append(value if p.process is None else p.process(value))
        return values


@functools.lru_cache(maxsize=512)
def compile_statement(statement: AnySelect, dialect: Dialect) -> Compiled:
    compiled = statement.compile(dialect=dialect)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("parameters rendered at execution time: use conn.execute")
    if getattr(compiled, "escaped_bind_names", None):
        raise ValueError("escaped parameter names: use conn.execute")
    for column in statement.selected_columns:
        if _result_processed(column.type, dialect):
            raise ValueError(f"column {column.key!r} needs a result processor: use conn.execute")
    parameters = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None or bind.expanding:
            raise ValueError(f"parameter {name!r} is computed or expanding: use conn.execute")
        default = _REQUIRED if bind.required else bind.value
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        parameters.append(_Parameter(name, default, process))
    record = record_class(list(statement.selected_columns.keys()))
    return Compiled(compiled.string, tuple(parameters), record)


def _result_processed(type_: Any, dialect: Dialect) -> bool:
    """Whether SQLAlchemy converts this type's values after asyncpg decodes them. Numeric
    types decide by the column's type on the wire, unknown here: they count as converted."""
    try:
        return type_.dialect_impl(dialect).result_processor(dialect, None) is not None
    except Exception:
        return True


async def fetch(
    conn: AsyncConnection, statement: AnySelect, params: Mapping[str, Any]
) -> list[Record]:
    """The statement's rows, run by asyncpg on `conn`'s connection."""
    compiled = compile_statement(statement, conn.dialect)
    args = compiled.arguments(params)
    sync = conn.sync_connection
    assert sync is not None
    events = sync._has_events or sync.engine._has_events
    # The checked-out pool connection. `get_raw_connection` reads the same attribute in a
    # greenlet (7 µs), needed only to revalidate a connection that was invalidated.
    raw = sync._dbapi_connection
    if raw is None:
        raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if events:
        sync.dispatch.before_cursor_execute(sync, None, compiled.sql, args, None, False)
    try:
        rows: list[Record] = await driver.fetch(compiled.sql, *args, record_class=compiled.record)
    except asyncio.CancelledError:
        await close_within(driver, CANCEL_GRACE)
        await conn.invalidate()
        raise
    except Exception:
        # The protocol may still be consuming the error (a terminated backend sends one,
        # then closes): reused now, the connection would refuse the next statement.
        driver.terminate()
        await conn.invalidate()
        raise
    if events:
        sync.dispatch.after_cursor_execute(sync, None, compiled.sql, args, None, False)
    return rows
