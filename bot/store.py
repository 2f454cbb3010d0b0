"""Persistence: what must outlive a restart, behind SQLAlchemy.

SQLite by default (a file under EVENTMESH_DATA_DIR); any SQLAlchemy URL works, and the test
suite runs the same tests on PostgreSQL. The methods are synchronous and short: callers on
the event loop run them with `asyncio.to_thread` so a slow disk never delays an ack.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

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


class AuditRecord(Base):
    """Who ran what, where, when, and how it ended: one row per command or button press."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    result: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class HealthCheckRecord(Base):
    """One health check of one environment; the history gives consecutive-failure counts."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), index=True)
    health: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class HealthStreakRecord(Base):
    """Each environment's latest result and how many checks in a row had it.

    Kept beside the history so that a cycle over hundreds of environments reads one row per
    environment, not each one's history.
    """

    __tablename__ = "health_streaks"

    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    health: Mapped[str] = mapped_column(String(16))
    streak: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class HealthCheck:
    """One check's result as the store keeps it."""

    environment: str
    health: str
    status_code: int | None
    latency_ms: float | None
    version: str | None
    reason: str
    checked_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: int
    user_id: str
    channel_id: str
    command: str
    text: str
    outcome: str
    result: str
    started_at: datetime
    finished_at: datetime | None


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'eventmesh.db').resolve()}"


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns; everything we stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Store:
    def __init__(self, url: str, clock: Clock = utc_now) -> None:
        self.url = make_url(url)
        self.clock = clock
        self.engine = self._create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
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

    # --- audit log -------------------------------------------------------------------------

    @_guarded
    def audit_start(self, *, user_id: str, channel_id: str, command: str, text: str) -> int:
        with self._session() as session, session.begin():
            record = AuditRecord(
                user_id=user_id,
                channel_id=channel_id,
                command=command,
                text=text[:MAX_AUDIT_TEXT],
                started_at=self.clock(),
            )
            session.add(record)
            session.flush()
            return record.id

    @_guarded
    def audit_finish(self, audit_id: int, *, outcome: str, result: str) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(AuditRecord)
                .where(AuditRecord.id == audit_id)
                .values(outcome=outcome, result=result[:MAX_AUDIT_TEXT], finished_at=self.clock())
            )

    @_guarded
    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        with self._session() as session:
            rows = session.scalars(
                select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
            ).all()
        return [
            AuditEntry(
                id=row.id,
                user_id=row.user_id,
                channel_id=row.channel_id,
                command=row.command,
                text=row.text,
                outcome=row.outcome,
                result=row.result,
                started_at=_as_utc(row.started_at),  # type: ignore[arg-type]
                finished_at=_as_utc(row.finished_at),
            )
            for row in rows
        ]

    # --- health checks -----------------------------------------------------------------------

    @_guarded
    def record_health_checks(self, checks: Sequence[HealthCheck]) -> list[int]:
        """Keep a batch of checks in one transaction; returns each one's streak.

        The streak is how many checks in a row, this one included, the environment had this
        result. Checks of one environment within the batch count in the order given.
        """
        if not checks:
            return []
        names = {check.environment for check in checks}
        # One batch at a time in this process: each reads the streaks it then updates, and
        # SQLite refuses a write made on a stale read (other replicas: FOR UPDATE, below).
        with self._health_writes, self._session() as session, session.begin():
            streaks = {
                row.environment: row
                for row in session.scalars(
                    select(HealthStreakRecord)
                    .where(HealthStreakRecord.environment.in_(names))
                    .with_for_update()
                )
            }
            counted: list[int] = []
            for check in checks:
                row = streaks.get(check.environment)
                if row is None:
                    # First check since the streaks table came: count from the history once.
                    health, streak = self._latest_streak(session, check.environment)
                    row = HealthStreakRecord(
                        environment=check.environment, health=health or check.health, streak=streak
                    )
                    session.add(row)
                    streaks[check.environment] = row
                if row.health == check.health:
                    row.streak += 1
                else:
                    row.health, row.streak = check.health, 1
                counted.append(row.streak)
            # One executemany, not an ORM object per row: a batch is hundreds of rows.
            session.execute(
                insert(HealthCheckRecord),
                [
                    {
                        "environment": check.environment,
                        "health": check.health,
                        "status_code": check.status_code,
                        "latency_ms": check.latency_ms,
                        "version": check.version,
                        "reason": check.reason[:MAX_AUDIT_TEXT],
                        "checked_at": check.checked_at,
                    }
                    for check in checks
                ],
            )
        return counted

    @_guarded
    def record_health_check(
        self,
        *,
        environment: str,
        health: str,
        status_code: int | None,
        latency_ms: float | None,
        version: str | None,
        reason: str,
        checked_at: datetime,
    ) -> int:
        check = HealthCheck(
            environment, health, status_code, latency_ms, version, reason, checked_at
        )
        return self.record_health_checks([check])[0]

    @_guarded
    def consecutive_results(self, environment: str, health: str) -> int:
        """How many of the environment's latest checks in a row had this result."""
        with self._session() as session:
            row = session.get(HealthStreakRecord, environment)
            latest, streak = (
                (row.health, row.streak)
                if row is not None
                else self._latest_streak(session, environment)
            )
        return streak if latest == health else 0

    @staticmethod
    def _latest_streak(
        session: Session, environment: str, limit: int = 1000
    ) -> tuple[str | None, int]:
        """The latest result in the history and how many checks in a row had it (capped)."""
        recent = session.scalars(
            select(HealthCheckRecord.health)
            .where(HealthCheckRecord.environment == environment)
            .order_by(HealthCheckRecord.id.desc())
            .limit(limit)
        ).all()
        if not recent:
            return None, 0
        streak = 0
        for value in recent:
            if value != recent[0]:
                break
            streak += 1
        return recent[0], streak

    @_guarded
    def health_check_count(self, environment: str | None = None) -> int:
        with self._session() as session:
            query = select(func.count(HealthCheckRecord.id))
            if environment is not None:
                query = query.where(HealthCheckRecord.environment == environment)
            return session.scalar(query) or 0
