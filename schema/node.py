"""The Relay `Node` interface and the per-request context type every field receives."""

from __future__ import annotations

import strawberry

from resolvers.context import Context

Info = strawberry.Info[Context, None]


@strawberry.interface(description="An object with an opaque, globally unique ID.")
class Node:
    id: strawberry.ID
