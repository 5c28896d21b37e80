"""Planned completion (schema/plan.py) answers exactly as graphql-core's own.

Two layers: a small schema built to reach every branch of the planner (nulls in non-null
fields, values that do not coerce, resolvers that raise or return awaitables, fields left
to graphql-core, fragments, directives, interfaces); then the real API over a seeded
PostgreSQL, the same requests answered with plans on and off, byte for byte.
"""

from __future__ import annotations

import asyncio
import enum
import json
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from strawberry import UNSET, relay
from strawberry.extensions import ParserCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import convert_arguments

from db.engine import Database
from db.seed import SeedCounts, seed
from schema import calls
from schema.executor import PlannedExecutor, planned_executor
from tests import conftest
from tests.conftest import make_account, running_app

# -- a schema that reaches every branch -------------------------------------------------

CALLS: list[str] = []


@strawberry.interface
class Thing:
    id: strawberry.ID


@strawberry.type
class Leaf(Thing):
    id: strawberry.ID
    name: str
    count: int
    ratio: float
    maybe: str | None
    strict: str  # set to None on purpose in some rows
    # `tallied`'s value, given beforehand to some leaves (`box(variant: "tallied")`).
    tally: strawberry.Private[int | calls.NotRead] = calls.NOT_READ

    @strawberry.field
    @calls.prefetched("tally")
    def tallied(self) -> int:
        CALLS.append(f"tallied {self.name}")
        return self.count * 10

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    def depends(self, info: strawberry.Info) -> str:
        return f"{info.field_name}:{info.path.key}:{self.name}"

    @strawberry.field
    def counted(self) -> int:  # a call's Int: beyond 32 bits in "big-int"
        return self.count

    @strawberry.field
    def maybe_counted(self, info: strawberry.Info) -> int | None:
        return None if self.count % 2 else self.count

    @strawberry.field
    def named(self) -> str:  # a call's String: 7 in "int-name", which coerces
        return self.name

    @strawberry.field
    def strict_call(self) -> str:  # a call's null in a non-null field in "null-strict"
        return self.strict

    @strawberry.field
    def later(self) -> int | None:
        async def value() -> int:
            await asyncio.sleep(0)
            return self.count * 2

        return value()  # type: ignore[return-value]

    @strawberry.field
    def later_fails(self) -> int | None:
        async def value() -> int:
            await asyncio.sleep(0)
            raise ValueError("later failed")

        return value()  # type: ignore[return-value]

    @strawberry.field
    async def slow(self) -> str | None:
        CALLS.append(self.name)
        await asyncio.sleep(0)
        return f"slow {self.name}"

    @strawberry.field
    async def slow_strict(self) -> str:
        await asyncio.sleep(0)
        return f"strict {self.name}"

    @strawberry.field
    def boom(self) -> str | None:
        raise ValueError("boom")

    @strawberry.field
    def greet(self, whom: str = "you") -> str:
        return f"hi {whom} from {self.name}"


@strawberry.type
class Box:
    label: str
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None
    things: list[Thing]
    # Single objects, completed inline by the plan: `main` is null in "null-main".
    main: Leaf = None  # type: ignore[assignment]
    spare: Leaf | None = None


def _leaf(i: int, **changes: Any) -> Leaf:
    values: dict[str, Any] = dict(
        id=strawberry.ID(f"L{i}"),
        name=f"leaf{i}",
        count=i,
        ratio=i / 4,
        maybe=None if i % 2 else f"m{i}",
        strict=f"s{i}",
    )
    values.update(changes)
    return Leaf(**values)


@strawberry.enum
class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


@strawberry.input
class Pick:
    shade: Shade = Shade.LIGHT
    tags: list[str] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    @strawberry.field
    def echo(
        self,
        info: strawberry.Info,
        shade: Shade | None = strawberry.UNSET,
        n: int = 3,
        tags: list[str] | None = None,
        pick: Pick | None = None,
        node: relay.GlobalID | None = None,
    ) -> str:
        """Every kind of argument, as the resolver receives it; it changes what it got,
        which a shared conversion would leak into the next call."""
        seen = repr((shade, n, tags, pick, node, info.field_name, info.path.key))
        if tags is not None:
            tags.append("changed")
        if pick is not None:
            pick.tags.append("changed")
        return seen

    @strawberry.field
    async def later_echo(self, shade: Shade, n: int = 1) -> str:
        await asyncio.sleep(0)
        if n < 0:
            raise ValueError("negative")
        return f"{shade.value} {n}"

    @strawberry.field
    async def box(self, variant: str = "ok") -> Box:
        leaves = [_leaf(i) for i in range(1, 4)]
        if variant == "null-strict":
            leaves[1] = _leaf(2, strict=None)
        elif variant == "big-int":
            leaves[2] = _leaf(3, count=2**40)
        elif variant == "nan":
            leaves[0] = _leaf(1, ratio=float("nan"))
        elif variant == "int-name":
            leaves[0] = _leaf(1, name=7)
        elif variant == "null-item":
            leaves[1] = None  # type: ignore[call-overload]
        elif variant.startswith("tallied"):  # leaves 1 and 3 are given their value
            if variant == "tallied-big":
                leaves[2] = _leaf(3, count=2**40)
            for leaf in (leaves[0], leaves[2]):
                leaf.tally = leaf.count * 10
        elif variant == "cast-away":  # a Leaf cast to another type is not a Leaf
            leaves[1] = strawberry.cast(Box, _leaf(2))
        elif variant == "cast-alike":  # an alike object cast to Leaf is one
            leaves[1] = strawberry.cast(Leaf, SimpleNamespace(**vars(_leaf(2))))
        elif variant == "wrong-type":
            leaves[1] = Box(label="not a leaf", leaves=[], maybe_leaves=None, things=[])  # type: ignore[call-overload]
        things: list[Thing] = [*leaves]
        box = Box(label=variant, leaves=leaves, maybe_leaves=[leaves[0], None], things=things)
        box.main = None if variant == "null-main" else _leaf(7)  # type: ignore[assignment]
        box.spare = _leaf(8) if variant == "spare" else None
        return box

    @strawberry.field
    def boxes(self) -> list[Box]:
        leaves = [_leaf(i) for i in range(5)]
        return [
            Box(label=f"b{i}", leaves=leaves[i:], maybe_leaves=None, things=[]) for i in range(3)
        ]


def planned_schema(
    maxsize: int = 16, extensions: list[Any] | None = None
) -> tuple[strawberry.Schema, type[PlannedExecutor]]:
    config = StrawberryConfig()
    executor = planned_executor(maxsize, config.info_class)
    schema = strawberry.Schema(
        query=Query,
        types=[Leaf],
        config=config,
        execution_context_class=executor,
        extensions=extensions or [],
    )
    executor.bind(schema)
    return schema, executor


def schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    return planned_schema()[0], strawberry.Schema(query=Query, types=[Leaf])


def _answer(result: Any) -> str:
    errors = [
        {
            "message": e.message,
            "path": e.path,
            "locations": [loc.formatted for loc in e.locations or []],
        }
        for e in result.errors or []
    ]
    return json.dumps({"data": result.data, "errors": errors})


LEAF = "id name count ratio maybe strict shout depends later __typename"
TOY_QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    (f"{{ box {{ label leaves {{ {LEAF} }} }} }}", None),
    (f'{{ box(variant: "null-strict") {{ label leaves {{ {LEAF} }} }} }}', None),
    ('{ box(variant: "big-int") { leaves { count } maybeLeaves { count } } }', None),
    ('{ box(variant: "nan") { leaves { ratio } } }', None),
    ('{ box(variant: "int-name") { leaves { name shout } } }', None),
    ('{ box(variant: "wrong-type") { label leaves { name } } }', None),
    ('{ box(variant: "cast-away") { label leaves { name } } }', None),
    ('{ box(variant: "cast-alike") { label leaves { name count } things { id } } }', None),
    ('{ box(variant: "null-item") { label leaves { name } } }', None),
    ('{ box(variant: "null-item") { maybeLeaves { name } } }', None),
    # An awaitable made before the plan fails: awaited, then graphql-core completes anew.
    ('{ box(variant: "null-strict") { leaves { later strict } } }', None),
    ("{ box { leaves { laterFails name } } }", None),
    ("{ box { leaves { counted maybeCounted named strictCall } } }", None),
    ('{ box(variant: "big-int") { leaves { name counted maybeCounted } } }', None),
    ('{ box(variant: "int-name") { leaves { named shout } } }', None),
    ('{ box(variant: "null-strict") { leaves { strictCall name } } }', None),
    ('{ box(variant: "null-strict") { maybeLeaves { strictCall } leaves { named } } }', None),
    ("{ box { leaves { name slow } } }", None),
    ("{ box { leaves { slow name } label } }", None),
    ("{ box { leaves { name slowStrict } } }", None),
    ("{ box { leaves { name boom } } }", None),
    ('{ box { leaves { greet(whom: "ada") a: greet } } }', None),
    ("{ box { a: leaves { n: name } a: leaves { count } leaves { name } } }", None),
    (
        "{ box { ...B } } fragment B on Box { label leaves { ...L } } fragment L on Leaf { name }",
        None,
    ),
    ("{ box { leaves { ... on Leaf { name } ... on Thing { id } } } }", None),
    ("{ box { things { id ... on Leaf { name count } } } }", None),
    (
        "query($x: Boolean!) { box { leaves { name count @include(if: $x) } } }",
        {"x": True},
    ),
    (
        "query($x: Boolean!) { box { leaves { name count @include(if: $x) } } }",
        {"x": False},
    ),
    ("query($x: Boolean!) { box { ... @skip(if: $x) { label } } }", {"x": True}),
    ("{ boxes { label leaves { name later } maybeLeaves { name } } }", None),
    ("{ box { __typename maybeLeaves { __typename name } } }", None),
    # Arguments, resolved past Strawberry's wrapper (schema/calls.py).
    ("{ a: echo b: echo(shade: DARK, n: 5) c: echo(shade: null) }", None),
    ('{ echo(tags: ["x"], pick: {shade: DARK, tags: ["y"]}) again: echo(tags: ["x"]) }', None),
    ('{ echo(node: "VGhpbmc6MQ==") }', None),
    ('{ echo(node: "not a global id") n: echo }', None),
    (
        "query($s: Shade, $t: [String!], $p: Pick) { echo(shade: $s, tags: $t, pick: $p) }",
        {"s": "DARK", "t": ["v"], "p": {"tags": ["w"]}},
    ),
    ("query($s: Shade) { echo(shade: $s) }", {}),
    ("query($n: Int!) { laterEcho(shade: LIGHT, n: $n) }", {"n": 2}),
    ("query($n: Int!) { laterEcho(shade: LIGHT, n: $n) echo }", {"n": -1}),
    ('{ box(variant: "big-int") { leaves { greet(whom: "x") } } }', None),
    # A value read from the object's attribute (`calls.prefetched`), or from the call.
    ('{ box(variant: "tallied") { leaves { name tallied } } }', None),
    ('{ box(variant: "tallied-big") { leaves { tallied name } } }', None),
    ("{ box { leaves { tallied } maybeLeaves { tallied } } }", None),
    # A single object field, its plan called inline: null, non-null and null there, and
    # with a field that needs the path (`depends` reads its info).
    ("{ box { label main { name count } spare { name } } }", None),
    ('{ box(variant: "spare") { main { name depends } spare { name depends later } } }', None),
    ('{ box(variant: "null-main") { label main { name } spare { name } } }', None),
    ('{ box(variant: "spare") { a: spare { n: name } spare { count } } }', None),
]


@pytest.mark.parametrize(("query", "variables"), TOY_QUERIES)
async def test_planned_equals_graphql_core(query: str, variables: dict[str, Any] | None) -> None:
    planned, plain = schemas()
    for _ in range(2):  # the second run completes from the cached plan
        expected = _answer(await plain.execute(query, variable_values=variables))
        got = _answer(await planned.execute(query, variable_values=variables))
        assert got == expected


async def test_plans_are_used_and_bounded() -> None:
    schema, executor = planned_schema(2)
    for label in ("a", "b", "c"):
        result = await schema.execute(f'{{ box(variant: "{label}") {{ label }} }}')
        assert result.data == {"box": {"label": label}}
    assert len(executor.plan_cache) == 2  # one entry per operation, the oldest evicted


async def test_literal_arguments_are_converted_once_and_not_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    converted: list[object] = []

    def convert(value: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        converted.append(value)
        return convert_arguments(value, *args, **kwargs)

    monkeypatch.setattr(calls, "convert_arguments", convert)
    # The same document every time, as the server's own parse cache gives it, so that
    # the operation's plans are reused.
    planned, _ = planned_schema(extensions=[ParserCache])
    query = '{ echo(shade: DARK, n: 4) listed: echo(tags: ["x"]) }'
    for _ in range(3):
        result = await planned.execute(query)
        assert result.errors is None
        assert result.data == {
            "echo": repr((Shade.DARK, 4, None, None, None, "echo", "echo")),
            "listed": repr((UNSET, 3, ["x"], None, None, "echo", "listed")),
        }
    # Scalars and enum members are converted once, when the field is first planned; a
    # list, which the resolver may change, at every call.
    assert [sorted(k for k, v in c.items() if v is not None) for c in converted] == [
        ["n", "shade"],
        *[["n", "tags"]] * 4,
    ]


async def test_a_prefetched_value_is_read_without_a_call() -> None:
    planned, plain = schemas()
    query = '{ box(variant: "tallied") { leaves { tallied } } }'
    expected = {"box": {"leaves": [{"tallied": 10}, {"tallied": 20}, {"tallied": 30}]}}
    CALLS.clear()
    result = await planned.execute(query)
    assert (result.data, result.errors) == (expected, None)
    assert CALLS == ["tallied leaf2"]  # the only leaf not given its value
    CALLS.clear()
    result = await plain.execute(query)  # graphql-core's path calls every resolver
    assert (result.data, result.errors) == (expected, None)
    assert CALLS == ["tallied leaf1", "tallied leaf2", "tallied leaf3"]


async def test_a_delegated_field_runs_once() -> None:
    planned, _ = schemas()
    CALLS.clear()
    result = await planned.execute("{ box { leaves { slow } } }")
    assert result.errors is None
    assert CALLS == ["leaf1", "leaf2", "leaf3"]


# -- the real API, plans on and off ------------------------------------------------------

API_QUERIES = [
    "{ viewer { id username role createdAt } }",
    "{ vods(first: 5) { totalCount edges { cursor node { id title status durationSeconds "
    "createdAt owner { username role } stream { title status viewerCount } } } "
    "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
    "{ vods(first: 3, orderBy: {field: TITLE, direction: ASC}) { nodes { ...V } } } "
    "fragment V on Vod { __typename id title slug width height thumbnailUrl publishedAt "
    "stream { vod { id title } owner { username } } }",
    "{ liveStreams(first: 5) { nodes { id title status bitrateKbps bitrateUpdatedAt "
    "viewerCount owner { username } chatMessages(first: 3) { edges { cursor node { body "
    "createdAt author { username displayName } stream { title } } } "
    "pageInfo { hasNextPage } } } } }",
    '{ vods(first: 2, after: "not-a-cursor") { nodes { id } } }',
    "query($n: Int) { vods(first: $n) { a: nodes { t: title } b: nodes { id title } } }",
]


async def test_api_answers_the_same_with_plans_on_and_off(db: Database, database_url: str) -> None:
    await seed(db, SeedCounts(users=3, vods=40, streams=4, messages=60))
    admin = await make_account(db, "plan_admin", "admin")
    creator = await make_account(db, "plan_creator", "creator")
    answers: dict[bool, list[str]] = {}
    for plans in (False, True):
        settings = conftest.test_settings(
            database_url, execution_plans=plans, live_health_interval=3600
        )
        async with running_app(settings) as client:
            bodies = []
            for token in (admin.token, creator.token):
                for query in API_QUERIES:
                    response = await client.post(query, {"n": 4}, token=token)
                    bodies.append(f"{response.status_code} {response.text}")
            answers[plans] = bodies
    assert answers[True] == answers[False]
    assert all("errors" not in b for b in answers[True][:4])
