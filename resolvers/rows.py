"""Reading a joined row: the columns of one related object, by their label prefix."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any


@functools.cache
def _view(prefix: str, names: tuple[str, ...]) -> type:
    # One small class per join, whose properties read `row.<prefix><name>` in C
    # (attrgetter): several times cheaper per attribute than a __getattr__ fallback.
    namespace: dict[str, Any] = {"__slots__": ("_row",)}
    for name in names:
        namespace[name] = property(operator.attrgetter(f"_row.{prefix}{name}"))
    return type(f"Related[{prefix}]", (), namespace)


def related_reader(prefix: str, names: tuple[str, ...]) -> Callable[[Any], Any | None]:
    """A function of a row giving the related object joined into it as columns labelled
    `prefix + name` (read as attributes `name`, which is what `from_row` constructors
    expect), or None when the outer join found nothing, which shows as a null id."""
    view = _view(prefix, names)
    id_of = operator.attrgetter(prefix + "id")

    def read(row: Any) -> Any | None:
        if id_of(row) is None:
            return None
        found = view()
        found._row = row
        return found

    return read
