"""Alembic's environment: runs the revisions on the connection bot/store/schema.py hands it.

The connection arrives already holding the migration lock (bot/store/schema.py); nothing here
opens one of its own, so `eventmesh-bot db upgrade` and a starting replica share one path.
"""

from __future__ import annotations

from alembic import context

import bot.store  # noqa: F401  (every concern's tables register on Base.metadata)
from bot.store.base import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it: later revisions' op.batch_alter_table does that.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
