"""Objects read from rows lazily: a field reads its column when a query asks for it.

A page of 50 chat messages used to build 100 Strawberry objects field by field (ids
encoded, enums converted, every column read), though a query reads a few of them.
`row_reader` makes instead a subclass of the Strawberry type whose fields are properties
over the row; an instance is one object holding the row, and `isinstance` still holds, so
the type checks of graphql-core and Strawberry see the type itself.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Computed:
    """A field computed from one column (an id encoded, an enum looked up)."""

    function: Callable[[Any], Any]
    column: str


@dataclass(frozen=True, slots=True)
class Joined:
    """A related object joined into the same row, its columns labelled `prefix + name`;
    None when the outer join found nothing, which shows as a null id."""

    reader: Callable[[str], Callable[[Any], Any]]  # the related type's reader, by prefix
    prefix: str


Field = str | Computed | Joined


@dataclass(frozen=True, slots=True)
class Spec:
    """What a reader made by `row_reader` reads: its type, fields and column prefix (the
    columns a query needs are found from it, schema/columns.py)."""

    type: type
    fields: Mapping[str, Field]
    prefix: str


def spec_of(reader: Callable[[Any], Any]) -> Spec:
    return reader.spec  # type: ignore[attr-defined,no-any-return]


def _property(source: Field, prefix: str) -> property:
    if isinstance(source, str):
        # In C (attrgetter): several times cheaper than a Python function per access.
        return property(operator.attrgetter(f"_row.{prefix}{source}"))
    if isinstance(source, Computed):
        function, column = source.function, operator.attrgetter(prefix + source.column)
        return property(lambda self: function(column(self._row)))
    inner = source.reader(prefix + source.prefix)
    id_of = operator.attrgetter(prefix + source.prefix + "id")
    lazy = inner.lazy  # type: ignore[attr-defined]  # the class `row_reader` made `inner` make
    new = object.__new__

    def joined(self: Any) -> Any:
        """`inner(row)`, without its call (a page of 50 messages reads 50 authors)."""
        row = self._row
        if id_of(row) is None:
            return None
        found = new(lazy)
        found._row = row
        return found

    return property(joined)


def row_reader(cls: type[T], fields: Mapping[str, Field], prefix: str = "") -> Callable[[Any], T]:
    """A constructor of `cls` from a row whose columns are labelled `prefix + column` (or
    from any object with those attributes: PageInfo reads its Page). Fields not in
    `fields` keep their class default and may be assigned."""
    namespace: dict[str, Any] = {"__slots__": ("_row",), "__module__": cls.__module__}
    namespace.update((name, _property(source, prefix)) for name, source in fields.items())
    lazy = type(cls.__name__, (cls,), namespace)
    lazy.__qualname__ = cls.__qualname__
    new = object.__new__

    def read(row: Any) -> T:
        found: Any = new(lazy)
        found._row = row
        return found  # type: ignore[no-any-return]

    def many(rows: Iterable[Any]) -> list[T]:
        """`read` of each row, without a call per row (a page of 20 to 100)."""
        found: list[Any] = []
        append = found.append
        for row in rows:
            item: Any = new(lazy)
            item._row = row
            append(item)
        return found

    read.spec = Spec(cls, fields, prefix)  # type: ignore[attr-defined]
    read.many = many  # type: ignore[attr-defined]
    read.lazy = lazy  # type: ignore[attr-defined]
    return read


def read_many(read: Callable[[Any], T], rows: Iterable[Any]) -> list[T]:
    """`read` of each row: in one call when `read` was made by `row_reader`."""
    many = getattr(read, "many", None)
    return many(rows) if many is not None else [read(r) for r in rows]


def readers(cls: type[T], fields: Mapping[str, Field]) -> Callable[[str], Callable[[Any], T]]:
    """`row_reader` for each prefix, made once per prefix."""
    return functools.cache(functools.partial(row_reader, cls, fields))
