"""Relay's PageInfo, shared by every connection."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode
from strawberry import UNSET

from resolvers.pagination import Page
from resolvers.rows import read_many, row_reader
from schema.guard import LruCache

T = TypeVar("T")
N = TypeVar("N")
E = TypeVar("E")


@strawberry.type(description="Where a page sits in its list (Relay Cursor Connections).")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def from_page(cls, page: Page[Any]) -> PageInfo:
        # Read from the page when selected: each cursor costs an HMAC.
        return _read_page_info(page)


_read_page_info = row_reader(
    PageInfo,
    {
        "has_next_page": "has_next",
        "has_previous_page": "has_previous",
        "start_cursor": "start_cursor",
        "end_cursor": "end_cursor",
    },
)


def page_parts(page: Page[Any], from_row: Callable[[Any], N]) -> tuple[list[N], PageInfo]:
    """Nodes and PageInfo of a connection, each node built once from its row."""
    return read_many(from_row, page.rows), PageInfo.from_page(page)


def edges_of(page: Page[Any], nodes: list[N], edge: Callable[..., E]) -> list[E]:
    """A connection's edges, made only when a query selects them (each cursor is signed)."""
    return [edge(cursor=c, node=n) for c, n in zip(page.cursors(), nodes, strict=True)]


def given(value: T | None) -> T | None:
    """An omitted argument (UNSET) reads as None; SDL shows no default for it."""
    return None if value is UNSET else value


def _walk(
    info: Any, *, on_type: str | None = None, deep: bool = False
) -> Iterator[FieldNode | None]:
    """`walk` of the current field's selection.

    Walks graphql-core's AST directly: `info.selected_fields` converts the whole selection
    tree into Strawberry objects on every call, which costs more than the walk.
    """
    raw = info._raw_info
    return walk([n.selection_set for n in raw.field_nodes], raw.fragments, on_type, deep)


def walk(
    sets: Iterable[SelectionSetNode | None],
    fragments: Mapping[str, Any],
    on_type: str | None = None,
    deep: bool = False,
) -> Iterator[FieldNode | None]:
    """Each field node of the selection sets, fragments included (with `on_type`, only
    fragments on that type; with `deep`, at any depth below). None comes before the
    fields of a fragment whose inclusion the request decides (a directive, or variables
    of its own)."""
    pending = list(sets)
    while pending:
        selection_set = pending.pop()
        if selection_set is None:
            continue
        for child in selection_set.selections:
            if isinstance(child, FieldNode):
                yield child
                if deep:
                    pending.append(child.selection_set)
                continue
            if isinstance(child, FragmentSpreadNode):
                fragment = fragments.get(child.name.value)
                if fragment is None:
                    continue
                condition, selections = fragment.type_condition, fragment.selection_set
                varies = bool(
                    child.directives
                    or fragment.directives
                    or getattr(fragment, "variable_definitions", None)
                )
            elif isinstance(child, InlineFragmentNode):
                condition, selections = child.type_condition, child.selection_set
                varies = bool(child.directives)
            else:
                continue
            if on_type is not None and condition is not None and condition.name.value != on_type:
                continue
            if varies:
                yield None
            pending.append(selections)


# What a field's selection implies (which fields, which columns), by its field nodes.
_BY_NODES: LruCache[tuple[Hashable, ...], tuple[tuple[FieldNode, ...], Any]] = LruCache(2048)


def by_nodes(nodes: Sequence[FieldNode], key: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
    """`compute()` for a field's nodes and `key`, once while they are cached: what only
    their selection decides (never the variables) is the same on every request of a
    cached document. An entry holds the nodes, so that their ids cannot be reused."""
    full = (*map(id, nodes), *key)
    entry = _BY_NODES.get(full)
    if entry is not None and all(a is b for a, b in zip(entry[0], nodes, strict=True)):
        value: T = entry[1]
        return value
    value = compute()
    _BY_NODES.put(full, (tuple(nodes), value))
    return value


def per_selection(info: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()` once per cached document for the current field's selection: several
    look-aheads of one resolver (`selects`, `node_columns`, ...) read in one lookup."""
    return by_nodes(info._raw_info.field_nodes, (key,), compute)


def selects(info: Any, *names: str, deep: bool = False) -> bool:
    """Whether the current field's selection asks for any of `names`, fragments included;
    with `deep`, at any depth below it (the nodes of a connection, say)."""

    def walked() -> bool:
        return any(node is not None and node.name.value in names for node in _walk(info, deep=deep))

    return per_selection(info, ("selects", deep, *names), walked)


def signs_cursors(info: Any) -> bool:
    """Whether a connection's cursors are read: its `edges` (each has one, made with the
    edge) or pageInfo's `startCursor`/`endCursor` (at any depth: more is safe)."""
    return selects(info, "edges", "startCursor", "endCursor", deep=True)


def single_selection(info: Any, name: str, on_type: str) -> FieldNode | None:
    """The one field `name` that the current field's selection asks for on `on_type`
    (directly, or in fragments on that type); None when it is absent, asked for more than
    once (aliases), or when it or a fragment around it carries a directive (@skip and
    @include decide per request: the caller then takes the ordinary path)."""
    found: list[FieldNode] = []
    for node in _walk(info, on_type=on_type):
        if node is None:
            return None
        if node.name.value == name:
            if node.directives:
                return None
            found.append(node)
    return found[0] if len(found) == 1 else None
