"""The User type."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import strawberry

from resolvers.ids import global_id
from resolvers.rows import Computed, readers
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
        return _read_user(row)


# A user read from a row, or from the columns of a joined row labelled `prefix + column`.
user_reader = readers(
    User,
    {
        "id": global_id("User"),
        "username": "username",
        "display_name": "display_name",
        "role": Computed(UserRole, "role"),
        "created_at": "created_at",
    },
)
_read_user = user_reader("")
