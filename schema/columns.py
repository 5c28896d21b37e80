"""Which columns of a list's rows a query reads, so that the rest are not selected.

A page row carries every column of its table and of its joined owner, stream or author
(db/vods.py, db/chat.py, db/live.py), though a query reads a few: decoding the rest costs
asyncpg more than the statement itself (a timestamp is a `datetime` to build; W2's 51
rows of 10 columns cost 100 µs of client CPU, 41 µs with the 4 it reads). `node_columns`
walks the connection's `nodes { ... }` and `edges { node { ... } }` selections with the
row readers' field maps (resolvers/rows.py), and the list's statement selects only those
columns (`pruned`, db/sql.py), with what the list's resolver reads itself (ids; the
keys when its cursors are read, `signs_cursors`; the total). What the nodes need:

- each private field's column (`pk`, `owner_pk`, ...), which resolvers read;
- for each selected field its column, for a joined object its id (null when there is
  none) and, recursively, what its selection reads.

It over-selects rather than miss: fragments count whatever their type condition or
directives. A field read by a resolver, not by its reader, needs only private columns:
no resolver of these types reads a public attribute of its object (tests/schema/
test_columns.py selects every field alone through every list and compares the answer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from graphql import FieldNode, SelectionSetNode
from strawberry.schema.config import StrawberryConfig
from strawberry.types.private import is_private

from resolvers.rows import Computed, Spec, spec_of
from schema.pagination import by_nodes, walk

__all__ = ["node_columns"]

_NAMES = StrawberryConfig(auto_camel_case=True).name_converter  # as schema/build.py's
# (tests/schema/test_columns.py would fail on any other naming: every field is selected)


def node_columns(
    info: Any, reader: Callable[[Any], Any], field_nodes: list[FieldNode] | None = None
) -> frozenset[str]:
    """The columns that `reader` reads for the nodes the current connection field selects
    (or the connection field `field_nodes` below it), once per cached document."""
    raw = info._raw_info
    nodes = raw.field_nodes if field_nodes is None else field_nodes
    fragments = raw.fragments

    def walked() -> frozenset[str]:
        needed: set[str] = set()
        sets = list(_node_sets(nodes, fragments))
        _collect(spec_of(reader), sets, fragments, needed)
        return frozenset(needed)

    return by_nodes(nodes, ("columns", reader), walked)


def _fields(
    sets: Iterable[SelectionSetNode | None], fragments: Mapping[str, Any]
) -> Iterator[FieldNode]:
    """The field nodes of the selection sets, in every fragment."""
    return (node for node in walk(sets, fragments) if node is not None)


def _node_sets(
    field_nodes: Iterable[FieldNode], fragments: Mapping[str, Any]
) -> Iterator[SelectionSetNode | None]:
    for field in _fields([n.selection_set for n in field_nodes], fragments):
        if field.name.value == "nodes":
            yield field.selection_set
        elif field.name.value == "edges":
            for inner in _fields([field.selection_set], fragments):
                if inner.name.value == "node":
                    yield inner.selection_set


def _collect(
    spec: Spec,
    sets: list[SelectionSetNode | None],
    fragments: Mapping[str, Any],
    needed: set[str],
) -> None:
    by_name, private = _names(spec.type, tuple(spec.fields))
    prefix, fields = spec.prefix, spec.fields
    needed.update(_column(prefix, fields[name]) for name in private)
    for node in _fields(sets, fragments):
        name = by_name.get(node.name.value)
        source = None if name is None else fields.get(name)
        if source is None:
            continue
        if isinstance(source, str | Computed):
            needed.add(_column(prefix, source))
            continue
        inner = prefix + source.prefix
        needed.add(inner + "id")  # null when the join found nothing
        _collect(spec_of(source.reader(inner)), [node.selection_set], fragments, needed)


def _column(prefix: str, source: Any) -> str:
    if isinstance(source, str):
        return prefix + source
    if isinstance(source, Computed):
        return prefix + source.column
    raise TypeError(f"a private field is not read from a joined object: {source!r}")


@functools.cache
def _names(cls: type, mapped: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """GraphQL name -> Python name of the type's fields; and the mapped fields that are
    not GraphQL fields (strawberry.Private), whose columns are always read."""
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    by_name = {
        _NAMES.get_graphql_name(f): f.python_name
        for f in definition.fields
        if not is_private(f.type)
    }
    public = set(by_name.values())
    return by_name, tuple(name for name in mapped if name not in public)
