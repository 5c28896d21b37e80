"""Errors a resolver raises on purpose; each carries the GraphQL `extensions.code` it maps to.

    ApiError
    ├── BadUserInput       BAD_USER_INPUT    arguments the client can fix (cursor, first, id)
    ├── Unauthenticated    UNAUTHENTICATED   no valid token, and the field needs one
    └── Forbidden          FORBIDDEN         the viewer may see the object but not do this

Database failures are `db.errors.DatabaseTimeoutError` / `DatabaseUnavailableError` and are
mapped by the schema; anything else is unexpected and is masked.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "Authentication required: send a Bearer token.") -> None:
        super().__init__(message)


class Forbidden(ApiError):
    code = "FORBIDDEN"
