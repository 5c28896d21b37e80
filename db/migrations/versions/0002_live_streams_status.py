"""live streams: index for the status filter of Query.liveStreams

Revision ID: 0002_live_streams_status
Revises: 0001
Create Date: 2026-11-27 18:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0002_live_streams_status"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Admins filtering by status walk this index newest first instead of filtering the
    # global (created_at, id) index; creators' lists use (owner_id, created_at, id).
    op.create_index(
        "live_streams_status_created_idx",
        "live_streams",
        ["status", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("live_streams_status_created_idx", table_name="live_streams")
