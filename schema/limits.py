"""Query limits, measured on the parsed document before any resolver runs.

depth    deepest field nesting (fragments expanded; introspection subtrees excluded)
aliases  aliased fields in the operation (fragments expanded)
tokens   lexical tokens of the document (graphql-core stops parsing past the limit)
cost     objects the query may return, like GitHub's node limit: each connection
         field multiplies its page size (`first`/`last`, or the field's default) into
         everything under it, and `nodes(ids:)` counts its ids; root fields count 1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    ValueNode,
    VariableNode,
)
from graphql.language import Lexer

# Page sizes a connection field falls back to when neither `first` nor `last` is given.
DEFAULT_PAGE = {"vods": 20, "liveStreams": 20, "chatMessages": 50}
_FALLBACK_PAGE = 20


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 12
    max_aliases: int = 15
    max_tokens: int = 1500
    max_cost: int = 5000


@dataclass(frozen=True, slots=True)
class Measure:
    depth: int
    aliases: int
    cost: int


@dataclass(slots=True)
class _Shape:
    """A selection set's measure at multiplier 1 (cost scales linearly with it)."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0


class _Walker:
    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self._fragments = fragments
        self._variables = variables
        self._memo: dict[str, _Shape] = {}
        self._active: set[str] = set()

    def selection_set(self, node: SelectionSetNode | None, *, root: bool = False) -> _Shape:
        shape = _Shape()
        if node is None:
            return shape
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                part = self._field(selection, root=root)
            elif isinstance(selection, InlineFragmentNode):
                part = self.selection_set(selection.selection_set, root=root)
            elif isinstance(selection, FragmentSpreadNode):
                part = self._spread(selection.name.value, root=root)
            else:  # pragma: no cover - graphql-core has no other selection kinds
                continue
            shape.depth = max(shape.depth, part.depth)
            shape.aliases += part.aliases
            shape.cost += part.cost
        return shape

    def _spread(self, name: str, *, root: bool) -> _Shape:
        key = f"{name}:{root}"
        found = self._memo.get(key)
        if found is not None:
            return found
        fragment = self._fragments.get(name)
        if fragment is None or name in self._active:  # validation reports these
            return _Shape()
        self._active.add(name)
        shape = self.selection_set(fragment.selection_set, root=root)
        self._active.discard(name)
        self._memo[key] = shape
        return shape

    def _field(self, node: FieldNode, *, root: bool) -> _Shape:
        aliases = 1 if node.alias is not None else 0
        name = node.name.value
        if name.startswith("__"):  # introspection: bounded by the schema itself
            return _Shape(aliases=aliases)
        size = self._page_size(node)
        child = self.selection_set(node.selection_set)
        multiplier = size if size is not None else 1
        cost = (1 if root else 0) + (size or 0) + multiplier * child.cost
        return _Shape(depth=1 + child.depth, aliases=aliases + child.aliases, cost=cost)

    def _page_size(self, node: FieldNode) -> int | None:
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        name = node.name.value
        if "ids" in arguments:
            ids = self._value(arguments["ids"])
            return len(ids) if isinstance(ids, list) else 1
        for argument in ("first", "last"):
            if argument in arguments:
                value = self._value(arguments[argument])
                # A value that isn't a GraphQL Int is left to variable coercion to reject.
                if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31:
                    return max(value, 1)
        if name in DEFAULT_PAGE:
            return DEFAULT_PAGE[name]
        if "first" in arguments or "last" in arguments:
            return _FALLBACK_PAGE
        return None

    def _value(self, node: ValueNode) -> Any:
        if isinstance(node, VariableNode):
            return self._variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, ListValueNode):
            return [self._value(v) for v in node.values]
        return None


def operation_of(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation that `name` chooses (None: the only one), as execution chooses it;
    None when there is no such operation."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


def _variables_with_defaults(
    operation: OperationDefinitionNode, variables: Mapping[str, Any] | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    walker = _Walker({}, {})
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None:
            values[definition.variable.name.value] = walker._value(definition.default_value)
    values.update(variables or {})
    return values


def measure(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any] | None
) -> Measure | None:
    """The operation's depth, aliases and cost; None if the operation can't be chosen."""
    operation = operation_of(document, operation_name)
    if operation is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    walker = _Walker(fragments, _variables_with_defaults(operation, variables))
    shape = walker.selection_set(operation.selection_set, root=True)
    return Measure(depth=shape.depth, aliases=shape.aliases, cost=max(shape.cost, 1))


def check(measured: Measure, limits: Limits) -> list[GraphQLError]:
    errors = []
    for name, value, limit in (
        ("depth", measured.depth, limits.max_depth),
        ("aliases", measured.aliases, limits.max_aliases),
        ("cost", measured.cost, limits.max_cost),
    ):
        if value > limit:
            errors.append(too_complex(name, value, limit))
    return errors


def too_complex(limit_name: str, measured: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"Query {limit_name} {measured} exceeds the limit of {limit}.",
        extensions={
            "code": "QUERY_TOO_COMPLEX",
            "limit": limit_name,
            "measured": measured,
            "maximum": limit,
        },
    )


def count_tokens(query: str, *, stop_after: int) -> int:
    """Lexical tokens in `query` (without <SOF>/<EOF>), counting at most `stop_after`."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while lexer.advance().kind is not TokenKind.EOF and count < stop_after:
            count += 1
    except GraphQLError:
        pass
    return count
