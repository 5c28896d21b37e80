"""The data model as SQLAlchemy Core tables; the migrations create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

USER_ROLES = ("admin", "creator", "viewer")
VIDEO_STATUSES = ("pending", "processing", "ready", "failed")
STREAM_STATUSES = ("idle", "live", "ending", "ended")
CHAT_BODY_MAX = 500


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


users = Table(
    "users",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("username", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(_in("role", USER_ROLES), name="users_role_check"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 of the token; the token itself is never stored.
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("api_tokens_user_id_idx", "user_id"),
)

videos = Table(
    "videos",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("owner_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("title", Text, nullable=False),
    Column("slug", Text, nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default="pending"),
    # 0 until processing has measured it, so every order key is NOT NULL and keyset-safe.
    Column("duration_seconds", Integer, nullable=False, server_default="0"),
    Column("width", Integer),
    Column("height", Integer),
    Column("thumbnail_url", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("published_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
    CheckConstraint(_in("status", VIDEO_STATUSES), name="videos_status_check"),
    CheckConstraint("duration_seconds >= 0", name="videos_duration_check"),
)

live_streams = Table(
    "live_streams",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("owner_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("title", Text, nullable=False),
    Column("slug", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default="idle"),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("vod_video_id", BigInteger, ForeignKey("videos.id")),
    Column("viewer_count_current", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(_in("status", STREAM_STATUSES), name="live_streams_status_check"),
    Index("live_streams_owner_created_idx", "owner_id", "created_at", "id"),
    Index("live_streams_created_idx", "created_at", "id"),
    Index("live_streams_status_created_idx", "status", "created_at", "id"),
    Index(
        "live_streams_vod_video_id_idx",
        "vod_video_id",
        postgresql_where=text("vod_video_id IS NOT NULL"),
    ),
)

live_stream_segments = Table(
    "live_stream_segments",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "stream_id",
        BigInteger,
        ForeignKey("live_streams.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("quality", String(16), nullable=False),
    Column("sequence_number", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("stream_id", "quality", "sequence_number"),
    Index("live_stream_segments_stream_received_idx", "stream_id", "received_at"),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "stream_id",
        BigInteger,
        ForeignKey("live_streams.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("client_mutation_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("deleted_at", DateTime(timezone=True)),
    Column("deleted_by_id", BigInteger, ForeignKey("users.id")),
    CheckConstraint(f"char_length(body) BETWEEN 1 AND {CHAT_BODY_MAX}", name="chat_body_check"),
    UniqueConstraint("user_id", "client_mutation_id"),
    Index(
        "chat_messages_stream_live_idx",
        "stream_id",
        text("id DESC"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

# Every VOD list order, for admins (global) and for everyone else (per owner); ties by id.
VOD_ORDER_COLUMNS = ("created_at", "title", "duration_seconds")
for _column in VOD_ORDER_COLUMNS:
    Index(
        f"videos_{_column}_idx",
        videos.c[_column],
        videos.c.id,
        postgresql_where=text("deleted_at IS NULL"),
    )
    Index(
        f"videos_owner_{_column}_idx",
        videos.c.owner_id,
        videos.c[_column],
        videos.c.id,
        postgresql_where=text("deleted_at IS NULL"),
    )

# Server-wide secrets shared by every instance on this database (the cursor signing key);
# generated by the migration so that no instance needs configuration to agree with another.
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
)
