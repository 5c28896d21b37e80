"""Assemble the Strawberry Schema object."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from schema.errors import ErrorCodes
from schema.live_stream import LiveStream
from schema.query import Query
from schema.user import User
from schema.vod import Vod


class _Schema(strawberry.Schema):
    def process_errors(self, errors: object, execution_context: object = None) -> None:
        """Logging happens in ErrorCodes, once, and only for unexpected errors."""


def build_schema() -> strawberry.Schema:
    return _Schema(
        query=Query,
        types=[User, Vod, LiveStream],
        extensions=[ErrorCodes],
        config=StrawberryConfig(auto_camel_case=True),
    )
