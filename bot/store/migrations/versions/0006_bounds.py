"""Safe hands (issue 16): one open incident per de-duplication key, and the indexes the
per-user rate limits and the retention job read by.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = sa.text("status != 'resolved'")


def upgrade() -> None:
    op.create_index(
        "uq_incidents_open_dedupe_key",
        "incidents",
        ["dedupe_key"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_audit_log_user_command_started", "audit_log", ["user_id", "command", "started_at"]
    )
    op.create_index("ix_audit_log_started_at", "audit_log", ["started_at"])
    op.create_index("ix_alert_events_at", "alert_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_alert_events_at", table_name="alert_events")
    op.drop_index("ix_audit_log_started_at", table_name="audit_log")
    op.drop_index("ix_audit_log_user_command_started", table_name="audit_log")
    op.drop_index("uq_incidents_open_dedupe_key", table_name="incidents")
