"""Checks shared by every argument that reaches SQL as text."""

from __future__ import annotations

from resolvers.errors import BadUserInput


def text_argument(value: str, *, argument: str, max_length: int) -> str:
    """PostgreSQL text cannot hold NUL; overlong input is refused, never truncated."""
    if "\x00" in value:
        raise BadUserInput(f"`{argument}` must not contain NUL characters.", argument=argument)
    if len(value) > max_length:
        raise BadUserInput(
            f"`{argument}` is limited to {max_length} characters.", argument=argument
        )
    return value
