"""Relay connection arguments and opaque, signed keyset cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson

from resolvers.errors import BadUserInput

R = TypeVar("R")
K = TypeVar("K")
MAX_PAGE = 100
MAX_PK = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAC_BYTES = 12
_MAX_CURSOR_CHARS = 1024


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    backward: bool
    after: str | None
    before: str | None


def page_request(
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    default: int,
    maximum: int = MAX_PAGE,
) -> PageRequest:
    """Validate first/last: both given, or outside 1..maximum, is BAD_USER_INPUT (no clamping)."""
    if first is not None and last is not None:
        raise BadUserInput("Pass either `first` or `last`, not both.", argument="first")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 1 <= value <= maximum:
            raise BadUserInput(
                f"`{name}` must be between 1 and {maximum}; got {value}.", argument=name
            )
    # `before` alone pages backward, like `last` would.
    backward = last is not None or (first is None and before is not None and after is None)
    limit = last if last is not None else first if first is not None else default
    return PageRequest(limit=limit, backward=backward, after=after, before=before)


class CursorCodec:
    """Cursor = base64url(json([kind, *key]) + HMAC). Tampering and cross-use are detected."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, key: Sequence[Any]) -> str:
        payload = orjson.dumps([kind, *key])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def decode(self, cursor: str, kind: str, *, argument: str) -> list[Any]:
        invalid = BadUserInput(f"Invalid cursor in `{argument}`.", argument=argument)
        if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR_CHARS:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        decoded = orjson.loads(payload)
        if not isinstance(decoded, list) or not decoded or decoded[0] != kind:
            raise BadUserInput(
                f"The cursor in `{argument}` belongs to another list or order.", argument=argument
            )
        return decoded[1:]

    def bound(
        self,
        cursor: str | None,
        kind: str,
        *,
        argument: str,
        parse: Callable[[list[Any]], K],
    ) -> K | None:
        """The keyset bound in `cursor` (None when absent); `parse` raises ValueError on a
        key that is signed but not of this list's shape."""
        if cursor is None:
            return None
        key = self.decode(cursor, kind, argument=argument)
        try:
            return parse(key)
        except (ValueError, OverflowError):
            raise BadUserInput(f"Invalid cursor in `{argument}`.", argument=argument) from None


def timestamp_key(value: datetime) -> int:
    """A timestamp as integer microseconds since the epoch: exact, and JSON-safe."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def timestamp_from_key(value: Any) -> datetime:
    if type(value) is not int:
        raise ValueError("timestamp key")
    return _EPOCH + timedelta(microseconds=value)


def pk_from_key(value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_PK:
        raise ValueError("primary key")
    return value


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    rows: list[R]
    has_next: bool
    has_previous: bool
    # Signing a cursor costs an HMAC: only the ones a query asks for are made.
    cursor_of: Callable[[R], str]
    total: int | None = None

    @property
    def start_cursor(self) -> str | None:
        return self.cursor_of(self.rows[0]) if self.rows else None

    @property
    def end_cursor(self) -> str | None:
        return self.cursor_of(self.rows[-1]) if self.rows else None

    def cursors(self) -> list[str]:
        return [self.cursor_of(r) for r in self.rows]


def trim(
    rows: Sequence[R],
    request: PageRequest,
    cursor_of: Callable[[R], str],
    *,
    total: int | None = None,
) -> Page[R]:
    """Turn limit+1 rows (in scan order) into a page; the extra row proves another page."""
    more = len(rows) > request.limit
    kept = list(rows[: request.limit])
    if request.backward:
        kept.reverse()
        has_next, has_previous = request.before is not None, more
    else:
        has_next, has_previous = more, request.after is not None
    return Page(
        rows=kept,
        has_next=has_next,
        has_previous=has_previous,
        cursor_of=cursor_of,
        total=total,
    )
