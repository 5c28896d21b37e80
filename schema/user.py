"""The User type."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import strawberry

from resolvers.ids import encode_id
from schema.node import Node


@strawberry.enum(description="What a user may do in the studio.")
class UserRole(enum.Enum):
    ADMIN = "admin"
    CREATOR = "creator"
    VIEWER = "viewer"


@strawberry.type(description="A person with an account: creator, admin or viewer.")
class User(Node):
    id: strawberry.ID
    username: str
    display_name: str
    role: UserRole
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            id=strawberry.ID(encode_id("User", row.id)),
            username=row.username,
            display_name=row.display_name,
            role=UserRole(row.role),
            created_at=row.created_at,
        )
