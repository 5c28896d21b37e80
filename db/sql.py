"""Small SQL helpers shared by the query builders.

Hot statements are built once per shape and cached (`functools.cache`), so values always
travel as named bind parameters; these are the shared ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar, cast

from sqlalchemy import BigInteger, BindParameter, ColumnElement, Row, Select, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from db.direct import Record

# A row from `conn.execute` (SQLAlchemy's Row) or from db/direct.py's `fetch` (Record),
# or a row read as one column of its table's row type, its columns made attributes
# (SimpleNamespace): all read their columns as attributes.
DbRow = Row[Any] | Record | SimpleNamespace

S = TypeVar("S", bound=Select[Any])

# The viewer's id, in statements built for a non-admin (see `Access.params`).
USER_ID: BindParameter[int] = bindparam("user_id", type_=BigInteger())


@dataclass(frozen=True, slots=True)
class Access:
    """Who is asking: admins see every live row, others what they own."""

    user_id: int
    is_admin: bool

    def params(self) -> dict[str, Any]:
        """The bind parameters of a statement built for this viewer: `user_id` (USER_ID)
        unless the viewer is an admin, whose statements do not filter by owner."""
        return {} if self.is_admin else {"user_id": self.user_id}


def in_array(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column = ANY($n::bigint[])` bound to the list parameter `name`: one statement text
    (one prepared plan) for any number of ids."""
    return column == any_(bindparam(name, type_=ARRAY(BigInteger())))


@functools.lru_cache(maxsize=1024)
def pruned(statement: S, columns: frozenset[str] | None) -> S:
    """`statement` selecting only the columns named in `columns` (all with None), in the
    same order, from the same FROM clause, with the same conditions and order: a list
    read selects only what the query reads (schema/columns.py). Once per statement and
    column set: clients send few query shapes."""
    if columns is None:
        return statement
    kept = [c for c in statement.selected_columns if c.key in columns]
    return cast(S, statement.with_only_columns(*kept, maintain_column_froms=True))
