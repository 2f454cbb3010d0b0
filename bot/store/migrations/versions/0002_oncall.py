"""On-call overrides and hand-off notices (issue 19), as its create_all made them.

A database from a bot of that time has these tables already (bot/store/oncall.py made them
itself) and one from before it does not: stamped 0001 alike (bot/store/schema.py), each
gets here what it lacks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "oncall_handoff_notices" not in existing:
        op.create_table(
            "oncall_handoff_notices",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("level", sa.Text(), nullable=False),
            sa.Column("handoff_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("target", sa.String(length=64), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("level", "handoff_at", "target"),
        )
    if "oncall_overrides" not in existing:
        op.create_table(
            "oncall_overrides",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("level", sa.Text(), nullable=False),
            sa.Column("user_id", sa.String(length=64), nullable=False),
            sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("created_by", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("cancelled_by", sa.String(length=64), nullable=True),
            sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_oncall_overrides_ends_at", "oncall_overrides", ["ends_at"])
        op.create_index("ix_oncall_overrides_level", "oncall_overrides", ["level"])


def downgrade() -> None:
    op.drop_table("oncall_overrides")
    op.drop_table("oncall_handoff_notices")
