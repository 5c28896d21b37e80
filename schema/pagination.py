"""Relay's PageInfo, shared by every connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from strawberry import UNSET
from strawberry.types.nodes import SelectedField

from resolvers.pagination import Page

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
        return cls(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        )


def page_parts(
    page: Page[Any], from_row: Callable[[Any], N], edge: Callable[..., E]
) -> tuple[list[E], list[N], PageInfo]:
    """Edges, nodes and PageInfo of a connection, each node built once from its row."""
    nodes = [from_row(r) for r in page.rows]
    edges = [edge(cursor=c, node=n) for c, n in zip(page.cursors, nodes, strict=True)]
    return edges, nodes, PageInfo.from_page(page)


def given(value: T | None) -> T | None:
    """An omitted argument (UNSET) reads as None; SDL shows no default for it."""
    return None if value is UNSET else value


def selects(info: Any, name: str) -> bool:
    """Whether the current field's selection asks for `name`, fragments included."""
    pending: list[Any] = [*info.selected_fields]
    while pending:
        for child in pending.pop().selections:
            if isinstance(child, SelectedField):
                if child.name == name:
                    return True
            else:  # a fragment spread or inline fragment: look inside it
                pending.append(child)
    return False
