"""The store's core: the declarative base every record registers on, the engine and sessions,
and the guard that turns a database failure into StoreError.

Each concern (audit, health, timers, incidents, deployments, alerts) is a module of its own
whose mixin builds on StoreCore; bot/store/__init__.py composes them into Store.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from bot.clock import Clock, utc_now

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

    Base.metadata holds every concern's tables once bot.store is imported (its __init__
    imports each module), so create_all makes them all.
    """

    def __init__(self, url: str, clock: Clock = utc_now) -> None:
        self.url = make_url(url)
        self.clock = clock
        self.engine = self._create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # record_health_checks (health.py) writes one batch at a time in this process.
        self._health_writes = threading.Lock()
        Base.metadata.create_all(self.engine)

    def _create_engine(self, url: str) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
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

    def _session(self) -> Session:
        return self._sessions()
