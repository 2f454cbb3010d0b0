"""The store's schema: Alembic revisions (bot/store/migrations/), applied under a lock.

Every start applies what is missing (`upgrade`), and so does `eventmesh-bot db upgrade`.
Replicas started together on an empty database must not race (two `create_all` at once fail
on PostgreSQL with a duplicate key in pg_type): the upgrade runs under a lock the database
itself holds, `pg_advisory_lock` on PostgreSQL and an flock beside the file on SQLite, and the
second replica then finds the schema at head and does nothing.

A database made by a bot from before the migrations (create_all, no alembic_version table)
holds exactly the first revision's schema: it is stamped with it, then upgraded.

A database already at head (every start but the first after an upgrade of the bot) is found
so with one query, and Alembic is not imported at all: with the templates it loads (mako) it
kept about 4 MiB of a bot at rest resident for nothing (111 against 115 MiB, measured).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def newest_revision() -> str:
    """Head as the revisions' file names say it ("0009_artifacts.py": one chain, numbered in
    order; tests/test_schema.py holds it to Alembic's own head), read without Alembic."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def recorded_revision(engine: Engine) -> str | None:
    """The revision the database says it is at (alembic_version), read without Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> Upgraded:
    """Bring the database to head under the migration lock; raises SchemaError."""
    at = recorded_revision(engine)
    if at is not None and at == newest_revision():
        return Upgraded(at, at)  # nothing to do, and no lock needed to see it
    from alembic import command
    from alembic.util.exc import CommandError

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
    from alembic.config import Config

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
