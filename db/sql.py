"""Small SQL helpers shared by the query builders.

Hot statements are built once per shape and cached (`functools.cache`), so values always
travel as named bind parameters; these are the shared ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import BigInteger, BindParameter, ColumnElement, Row, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from db.direct import Record

# A row from `conn.execute` (SQLAlchemy's Row) or from db/direct.py's `fetch` (Record),
# or a row read as one column of its table's row type, its columns made attributes
# (SimpleNamespace): all read their columns as attributes.
DbRow = Row[Any] | Record | SimpleNamespace

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
