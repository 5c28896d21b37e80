"""A list's statement selects only the columns its query reads (schema/columns.py): every
field of its nodes, selected alone (nested ones too), answers what it answers beside all
the others, through every list, `nodes` and `edges`, fragments included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, is_leaf_type, parse
from sqlalchemy import text

from db.engine import Database
from db.seed import SeedCounts, seed
from schema import build_schema
from schema.pagination import by_nodes
from tests import conftest
from tests.conftest import make_account, running_app

SCHEMA = build_schema()._schema


def _named(type_: Any) -> Any:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


def selections(type_name: str, depth: int = 1) -> list[str]:
    """Each field of the type without arguments, alone; an object's own fields alone."""
    found = []
    node_type = SCHEMA.get_type(type_name)
    assert isinstance(node_type, GraphQLObjectType)
    for name, field in node_type.fields.items():
        if any(isinstance(a.type, GraphQLNonNull) for a in field.args.values()) or field.args:
            continue
        inner = _named(field.type)
        if is_leaf_type(inner):
            found.append(name)
        elif depth and isinstance(inner, GraphQLObjectType):
            found += [f"{name} {{ {s} }}" for s in selections(inner.name, depth - 1)]
    return found


def every(type_name: str) -> str:
    return " ".join(selections(type_name))


def project(full: Any, alone: Any) -> Any:
    """`full` cut to the shape of `alone`."""
    if isinstance(alone, dict) and isinstance(full, dict):
        return {k: project(full[k], v) for k, v in alone.items()}
    if isinstance(alone, list) and isinstance(full, list):
        return [project(f, a) for f, a in zip(full, alone, strict=True)]
    return full


LISTS = {
    "Vod": [
        "{ vods(first: 6) { nodes { %s } } }",
        "{ vods(first: 4, orderBy: {field: DURATION, direction: DESC}) {"
        " pageInfo { endCursor } nodes { %s } } }",
        "{ vods(first: 6, orderBy: {field: TITLE, direction: ASC}) { totalCount"
        " edges { cursor node { ...F } } } } fragment F on Vod { %s }",
    ],
    "LiveStream": [
        "{ liveStreams(first: 4) { edges { cursor node { %s } } } }",
        "{ liveStreams(first: 4) { nodes { ... on LiveStream { %s } } } }",
        "{ liveStreams(first: 3) { pageInfo { startCursor } nodes { %s } } }",
    ],
    "ChatMessage": [
        '{ node(id: "STREAM") { ... on LiveStream { chatMessages(first: 5) { nodes { %s } } } } }',
        '{ node(id: "STREAM") { ... on LiveStream { title'
        " chatMessages(last: 5) { edges { node { %s } } } } } }",
        "{ liveStreams(first: 2) { nodes { chatMessages(first: 3) {"
        " pageInfo { endCursor } nodes { %s } } } } }",
    ],
}


async def stream_with_chat(client: Any, token: str) -> str:
    found = await client.post(
        "{ liveStreams(first: 10) { nodes { id chatMessages(first: 1) { nodes { id } } } } }",
        token=token,
    )
    streams = found.json()["data"]["liveStreams"]["nodes"]
    return next(s["id"] for s in streams if s["chatMessages"]["nodes"])  # type: ignore[no-any-return]


async def test_each_field_alone_answers_as_beside_all_the_others(
    db: Database, database_url: str
) -> None:
    await seed(db, SeedCounts(users=3, vods=12, streams=4, messages=30))
    # A VOD recorded from a stream, so that Vod.stream is not null everywhere.
    await db.write(
        lambda conn: conn.execute(
            text(
                "UPDATE live_streams SET vod_video_id = (SELECT min(id) FROM videos)"
                " WHERE id = (SELECT min(id) FROM live_streams)"
            )
        )
    )
    admin = await make_account(db, "columns_admin", "admin")
    settings = conftest.test_settings(database_url, live_health_interval=3600)
    checked = 0
    async with running_app(settings) as client:
        stream = await stream_with_chat(client, admin.token)
        for type_name, templates in LISTS.items():
            for template in templates:
                template = template.replace("STREAM", stream)
                full = await client.post(template % every(type_name), token=admin.token)
                assert "errors" not in full.json(), full.text
                for selection in selections(type_name):
                    alone = await client.post(template % selection, token=admin.token)
                    body = alone.json()
                    assert "errors" not in body, (template % selection, alone.text)
                    assert body["data"] == project(full.json()["data"], body["data"])
                    checked += 1
        assert checked > 100


def test_what_a_selection_implies_is_computed_once_per_field_nodes_and_key() -> None:
    document = parse("{ a { b } a2: a { c } }")
    first, second = (s for s in document.definitions[0].selection_set.selections)  # type: ignore[attr-defined]
    calls: list[str] = []

    def compute(label: str) -> Callable[[], str]:
        def run() -> str:
            calls.append(label)
            return label

        return run

    assert by_nodes([first], ("k",), compute("one")) == "one"
    assert by_nodes([first], ("k",), compute("again")) == "one"  # cached
    assert by_nodes([first], ("other",), compute("two")) == "two"  # another key
    assert by_nodes([second], ("k",), compute("three")) == "three"  # other nodes
    assert by_nodes([first, second], ("k",), compute("four")) == "four"  # merged fields
    # The same text parsed again is other nodes (another document): computed anew.
    again = parse("{ a { b } a2: a { c } }").definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
    assert by_nodes([again], ("k",), compute("five")) == "five"
    assert calls == ["one", "two", "three", "four", "five"]
