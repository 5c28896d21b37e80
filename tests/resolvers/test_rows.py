"""Lazy row objects (resolvers/rows.py): one by one, or a page at once."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from resolvers.rows import Computed, read_many, row_reader


@dataclass
class Thing:
    name: str
    size: int
    label: str = "default"


def test_read_many_builds_what_read_builds() -> None:
    read = row_reader(Thing, {"name": "name", "size": Computed(lambda v: v * 2, "raw_size")})
    rows = [SimpleNamespace(name=f"n{i}", raw_size=i) for i in range(3)]
    one_by_one = [read(r) for r in rows]
    at_once = read_many(read, rows)
    assert [type(t) for t in at_once] == [type(t) for t in one_by_one]
    assert all(isinstance(t, Thing) for t in at_once)
    assert (
        [(t.name, t.size, t.label) for t in at_once]
        == [(t.name, t.size, t.label) for t in one_by_one]
        == [("n0", 0, "default"), ("n1", 2, "default"), ("n2", 4, "default")]
    )
    assert read_many(read, []) == []


def test_read_many_calls_any_other_reader_per_row() -> None:
    assert read_many(lambda row: row * 10, [1, 2]) == [10, 20]
