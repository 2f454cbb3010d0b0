"""The store's core: the declarative base every record registers on, the engine and sessions,
and the guard that turns a database failure into StoreError.

Each concern (audit, health, timers, incidents, deployments, alerts) is a module of its own
whose mixin builds on StoreCore; bot/store/__init__.py composes them into Store.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from bot.clock import Clock, utc_now
from bot.store.schema import Upgraded, upgrade

# Long free text (a pasted 5,000-character command) is cut, not refused: the audit must record
# that it happened without letting one user fill the database.
MAX_AUDIT_TEXT = 2000


P = ParamSpec("P")
R = TypeVar("R")


class StoreError(Exception):
    """The database failed (down, full, locked). Callers decide what can go on without it."""


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            detail = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
            raise StoreError(f"{method.__name__}: {type(exc).__name__}: {detail}") from exc

    return call


class Base(DeclarativeBase):
    pass


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'eventmesh.db').resolve()}"


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns; everything we stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class StoreCore:
    """The engine and sessions the concerns' mixins share.

    Opening a store brings its schema to this bot's version (bot/store/schema.py: Alembic
    revisions, under a lock, so replicas starting together never race); `schema` says what
    that did. Raises SQLAlchemyError when the database cannot be reached, SchemaError when it
    is newer than this bot.
    """

    def __init__(self, url: str, clock: Clock = utc_now) -> None:
        self.url = make_url(url)
        self.clock = clock
        self.engine = self._create_engine(url)
        self._answered_at = float("-inf")  # monotonic: the database's last answer here
        event.listen(self.engine, "after_cursor_execute", self._answered)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # record_health_checks (health.py) writes one batch at a time in this process.
        self._health_writes = threading.Lock()
        self.schema: Upgraded = upgrade(self.engine)
        self._file = self._sqlite_file()
        self._file_identity = _identity(self._file) if self._file else None
        self._file_problem: str | None = None

    def _sqlite_file(self) -> Path | None:
        database = self.url.database
        if self.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        return Path(database).resolve()

    def _create_engine(self, url: str) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            # A database that does not answer is an answer within seconds, not a hung command.
            connect_args = (
                {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
            )
            return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets readers (the /metrics page, a second replica's claim) run beside a writer.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine

    def close(self) -> None:
        self.engine.dispose()

    def _answered(self, *_statement: object) -> None:
        self._answered_at = time.monotonic()  # on whichever thread ran the statement

    def answered_within(self, seconds: float) -> bool:
        """Whether the database answered one of this process's statements in the last
        `seconds`, and the SQLite file (if any) is still the one opened: asking it again now
        would tell nothing new. Cheap (no query): call it anywhere."""
        if time.monotonic() - self._answered_at > seconds:
            return False
        return self._file is None or _identity(self._file) == self._file_identity

    def problem(self) -> str | None:
        """Why the store cannot be used now (None: it answers). Blocking: call in a thread."""
        try:
            self._check_file()
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except StoreError as exc:
            return str(exc)
        except SQLAlchemyError as exc:
            return str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        return None

    def _check_file(self) -> None:
        """A SQLite file deleted or replaced under the running bot: refuse, don't write on.

        SQLite keeps writing to the open, deleted file, and all of it is gone at the next
        start. A file put back (restored) is opened afresh.
        """
        if self._file is None:
            return
        identity = _identity(self._file)
        if identity == self._file_identity:
            self._file_problem = None
            return
        if identity is not None and self._file_problem is not None:
            self.engine.dispose()  # a restored file: new connections open it
            self._file_identity, self._file_problem = identity, None
            return
        what = "deleted" if identity is None else "replaced by another file"
        self._file_problem = (
            f"the SQLite database file {self._file} (EVENTMESH_DATABASE_URL) was {what} "
            "while the bot ran"
        )
        raise StoreError(self._file_problem)

    def _session(self) -> Session:
        self._check_file()
        return self._sessions()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)
