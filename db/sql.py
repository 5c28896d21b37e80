"""Small SQL helpers shared by the query builders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY


def in_array(column: ColumnElement[Any], ids: Sequence[int]) -> ColumnElement[bool]:
    """`column = ANY($1::bigint[])`: one statement text (one prepared plan) for any count."""
    return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger())))
