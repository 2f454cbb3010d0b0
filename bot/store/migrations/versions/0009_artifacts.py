"""Approve the artifact (issue 16): an approved request's run key, set once when its change
is recorded as started, so a request approved just before the bot died is started at the
next start-up — once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    # Requests approved before this revision were started then (or never will be): not new.
    op.execute("UPDATE approvals SET started_at = decided_at WHERE state = 'approved'")


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("started_at")
