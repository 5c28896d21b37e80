"""The three workloads of bench/vs_postgraphile.py, written once for each server.

Each workload is one GraphQL request sent over and over: the Reelgraph text, the
PostGraphile text that asks for the same rows (PostGraphile's `condition` and `orderBy`
spell out Reelgraph's visibility rule and order), and a function that reduces either
answer to plain values, so the harness can check that both return the same rows before
it times them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Fixture:
    """What the queries are about, found in the dataset by the harness."""

    creator_id: int
    creator_username: str
    creator_vods: int
    hot_stream_id: int
    hot_stream_messages: int
    chat_depth: int  # messages skipped (newest first) before the W2 page starts
    rg_chat_cursor: str | None  # Reelgraph's cursor after the `chat_depth`-th message
    pg_chat_cursor: str | None  # PostGraphile's cursor after the same message


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    role: str  # whose token: "creator" or "admin"
    connections: int
    reelgraph: str
    postgraphile: str
    reelgraph_needs: tuple[str, ...]  # "Type.field" that must exist in Reelgraph's schema
    normalise_reelgraph: Callable[[dict[str, Any]], Any]
    normalise_postgraphile: Callable[[dict[str, Any]], Any]
    note: str = ""


def _rg_pk(global_id: str) -> int:
    raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return int(raw.partition(":")[2])


def _pg_pk(node_id: str) -> int:
    return int(json.loads(base64.b64decode(node_id))[1])


W1_REELGRAPH = (
    "{ vods(first: 20) { totalCount pageInfo { hasNextPage endCursor } "
    "nodes { id title owner { username } stream { title } } } }"
)
W1_POSTGRAPHILE = (
    '{ allVideos(first: 20, condition: {ownerId: "%(creator)d", deletedAt: null}, '
    "orderBy: [CREATED_AT_DESC, ID_DESC]) { totalCount pageInfo { hasNextPage endCursor } "
    "nodes { nodeId title userByOwnerId { username } "
    "liveStreamsByVodVideoId(first: 1) { nodes { title } } } } }"
)
W2_REELGRAPH = (
    '{ node(id: "%(stream_gid)s") { ... on LiveStream { '
    'chatMessages(first: 50, after: "%(cursor)s") { nodes { body author { username } } } } } }'
)
W2_POSTGRAPHILE = (
    '{ allChatMessages(first: 50, after: "%(cursor)s", '
    'condition: {streamId: "%(stream)d", deletedAt: null}, orderBy: ID_DESC) '
    "{ nodes { body userByUserId { username } } } }"
)
W3_REELGRAPH = (
    "{ liveStreams(first: 20, status: LIVE) { nodes { title bitrateKbps viewerCount } } }"
)
W3_POSTGRAPHILE = (
    '{ allLiveStreams(first: 20, condition: {status: "live"}, '
    "orderBy: [CREATED_AT_DESC, ID_DESC]) { nodes { title viewerCountCurrent } } }"
)


def _w1_rg(data: dict[str, Any]) -> Any:
    c = data["vods"]
    return (
        c["totalCount"],
        c["pageInfo"]["hasNextPage"],
        [
            (
                _rg_pk(n["id"]),
                n["title"],
                n["owner"]["username"],
                n["stream"]["title"] if n["stream"] else None,
            )
            for n in c["nodes"]
        ],
    )


def _w1_pg(data: dict[str, Any]) -> Any:
    c = data["allVideos"]
    return (
        c["totalCount"],
        c["pageInfo"]["hasNextPage"],
        [
            (
                _pg_pk(n["nodeId"]),
                n["title"],
                n["userByOwnerId"]["username"],
                (n["liveStreamsByVodVideoId"]["nodes"] or [{"title": None}])[0]["title"],
            )
            for n in c["nodes"]
        ],
    )


def _w2_rg(data: dict[str, Any]) -> Any:
    return [
        (n["body"], n["author"]["username"] if n["author"] else None)
        for n in data["node"]["chatMessages"]["nodes"]
    ]


def _w2_pg(data: dict[str, Any]) -> Any:
    return [
        (n["body"], n["userByUserId"]["username"] if n["userByUserId"] else None)
        for n in data["allChatMessages"]["nodes"]
    ]


def _w3_rg(data: dict[str, Any]) -> Any:
    return [(n["title"], n["viewerCount"]) for n in data["liveStreams"]["nodes"]]


def _w3_pg(data: dict[str, Any]) -> Any:
    return [(n["title"], n["viewerCountCurrent"]) for n in data["allLiveStreams"]["nodes"]]


def stream_global_id(stream_id: int) -> str:
    return base64.urlsafe_b64encode(f"LiveStream:{stream_id}".encode()).decode().rstrip("=")


def build(fixture: Fixture, *, connections: int) -> list[Workload]:
    w1 = dict(
        role="creator",
        reelgraph=W1_REELGRAPH,
        postgraphile=W1_POSTGRAPHILE % {"creator": fixture.creator_id},
        reelgraph_needs=("Query.vods", "VodConnection.totalCount", "Vod.stream"),
        normalise_reelgraph=_w1_rg,
        normalise_postgraphile=_w1_pg,
    )
    return [
        Workload(
            key="W1",
            title=f"W1 studio library (creator, {fixture.creator_vods:,} VODs), "
            f"concurrency {connections}",
            connections=connections,
            **w1,  # type: ignore[arg-type]
        ),
        Workload(
            key="W1c1",
            title=f"W1 studio library (creator, {fixture.creator_vods:,} VODs), concurrency 1",
            connections=1,
            **w1,  # type: ignore[arg-type]
        ),
        Workload(
            key="W2",
            title=f"W2 chat scrollback (admin, stream of {fixture.hot_stream_messages:,} "
            f"messages, page after {fixture.chat_depth:,}), concurrency {connections}",
            role="admin",
            connections=connections,
            reelgraph=W2_REELGRAPH
            % {
                "stream_gid": stream_global_id(fixture.hot_stream_id),
                "cursor": fixture.rg_chat_cursor,
            },
            postgraphile=W2_POSTGRAPHILE
            % {"stream": fixture.hot_stream_id, "cursor": fixture.pg_chat_cursor},
            reelgraph_needs=("Query.node", "LiveStream.chatMessages", "ChatMessage.author"),
            normalise_reelgraph=_w2_rg,
            normalise_postgraphile=_w2_pg,
        ),
        Workload(
            key="W3",
            title=f"W3 live dashboard (admin, 20 live streams), concurrency {connections}",
            role="admin",
            connections=connections,
            reelgraph=W3_REELGRAPH,
            postgraphile=W3_POSTGRAPHILE,
            reelgraph_needs=(
                "Query.liveStreams",
                "LiveStream.bitrateKbps",
                "LiveStream.viewerCount",
            ),
            normalise_reelgraph=_w3_rg,
            normalise_postgraphile=_w3_pg,
            note="not symmetric: PostGraphile has no bitrate (no computed column exists), so "
            "it reads title + viewerCountCurrent only; Reelgraph also serves bitrateKbps "
            "through its 3 s cache",
        ),
    ]
