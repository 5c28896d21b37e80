"""Opaque global ids: base64url("Type:pk"), validated on the way in."""

from __future__ import annotations

import base64
import binascii
import functools

from resolvers.errors import BadUserInput
from resolvers.rows import Computed

NODE_TYPES = frozenset({"User", "Vod", "LiveStream", "ChatMessage"})
_MAX_PK = 2**63 - 1


def encode_id(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def global_id(type_name: str) -> Computed:
    """A row reader's `id` field: the row's `id` column, encoded when a query reads it."""
    return Computed(functools.partial(encode_id, type_name), "id")


def decode_id(global_id: str, *, expect: str | None = None) -> tuple[str, int]:
    """(type name, primary key); BadUserInput for anything we did not issue."""
    try:
        if len(global_id) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode("ascii")
        type_name, _, pk_text = raw.partition(":")
        pk = int(pk_text)
        if not pk_text.isdigit() or type_name not in NODE_TYPES or not 0 < pk <= _MAX_PK:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput(f"Invalid ID: {global_id[:64]!r}.", argument="id") from None
    if expect is not None and type_name != expect:
        raise BadUserInput(f"Expected a {expect} ID.", argument="id")
    return type_name, pk
