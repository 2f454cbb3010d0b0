"""The store's schema: Alembic revisions (bot/store/migrations/), applied under a lock.

Every start applies what is missing (`upgrade`), and so does `eventmesh-bot db upgrade`.
Replicas started together on an empty database must not race (two `create_all` at once fail
on PostgreSQL with a duplicate key in pg_type): the upgrade runs under a lock the database
itself holds, `pg_advisory_lock` on PostgreSQL and an flock beside the file on SQLite, and the
second replica then finds the schema at head and does nothing.

A database made by a bot from before the migrations (create_all, no alembic_version table)
holds exactly the first revision's schema: it is stamped with it, then upgraded.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema create_all made before the migrations
_BASELINE_TABLE = "timers"  # a table every database of that time has
# pg_advisory_lock takes a bigint: "EVMS" as a number, so the key says whose lock it is.
_PG_LOCK_KEY = int.from_bytes(b"EVMS", "big")


class SchemaError(Exception):
    """The schema cannot be brought to this bot's version (newer than it knows, say)."""


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # None: an empty database
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> Upgraded:
    """Bring the database to head under the migration lock; raises SchemaError."""
    with _migration_lock(engine) as connection:
        before = current(connection)
        config = _config(connection)
        try:
            if before is None and inspect(connection).has_table(_BASELINE_TABLE):
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
        except CommandError as exc:
            raise SchemaError(
                f"the database's schema is at revision {before}, which this bot does not know "
                f"(its newest is {head()}): run the bot version that made it, or a newer one"
            ) from exc
        connection.commit()
        after = current(connection)
    assert after is not None
    return Upgraded(before, after)


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that alone may change the schema until the block ends."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Session-level: held across the migrations' own transactions, freed with the
            # connection if this process dies.
            connection.execute(select(func.pg_advisory_lock(_PG_LOCK_KEY)))
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(select(func.pg_advisory_unlock(_PG_LOCK_KEY)))
                connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        with engine.connect() as connection:
            yield connection
        return
    # SQLite: an flock on a file beside the database (freed by the kernel if this process dies).
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
