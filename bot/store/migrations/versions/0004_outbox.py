"""The outbox (every message on its way to Slack) and posting leases (issue 15, delivery).

Like 0002: a database whose bot made these tables itself (create_all, before the migrations)
keeps them; one without gets them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "outbox" not in existing:
        op.create_table(
            "outbox",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("key", sa.String(length=200), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("lane", sa.Integer(), nullable=False),
            sa.Column("op", sa.String(length=16), nullable=False),
            sa.Column("channel", sa.String(length=64), nullable=True),
            sa.Column("user_id", sa.String(length=64), nullable=True),
            sa.Column("response_url", sa.Text(), nullable=True),
            sa.Column("thread_ts", sa.String(length=32), nullable=True),
            sa.Column("thread_of", sa.String(length=200), nullable=True),
            sa.Column("ts", sa.String(length=32), nullable=True),
            sa.Column("text", sa.Text(), nullable=True),
            sa.Column("blocks", sa.Text(), nullable=True),
            sa.Column("subject", sa.String(length=64), nullable=True),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("about", sa.Text(), nullable=False),
            sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("in_doubt", sa.Boolean(), nullable=False),
            sa.Column("claimed_by", sa.String(length=64), nullable=True),
            sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("sent_channel", sa.String(length=64), nullable=True),
            sa.Column("sent_ts", sa.String(length=32), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("key"),
        )
        op.create_index("ix_outbox_state_next_try", "outbox", ["state", "next_try_at"])
        op.create_index("ix_outbox_subject", "outbox", ["subject"])
    if "posting_leases" not in existing:
        op.create_table(
            "posting_leases",
            sa.Column("subject", sa.String(length=64), nullable=False),
            sa.Column("owner", sa.String(length=64), nullable=False),
            sa.Column("until", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("subject"),
        )


def downgrade() -> None:
    op.drop_table("posting_leases")
    op.drop_table("outbox")
