"""Persistence: what must outlive a restart, behind SQLAlchemy.

SQLite by default (a file under EVENTMESH_DATA_DIR); any SQLAlchemy URL works, and the test
suite runs the same tests on PostgreSQL. The methods are synchronous and short: callers on
the event loop run them with `asyncio.to_thread` so a slow disk never delays an ack.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
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


class TimerRecord(Base):
    """Something that must happen at a time, even if the bot restarts before then.

    A periodic sweep claims due rows (a lease, so a crashed claimer's timers come back) and
    marks them fired; see bot/scheduler.py.
    """

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


@dataclass(frozen=True)
class Timer:
    id: int
    kind: str
    key: str
    payload: dict[str, object]
    due_at: datetime
    attempts: int


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
    ) -> None:
        with self._session() as session, session.begin():
            session.add(
                HealthCheckRecord(
                    environment=environment,
                    health=health,
                    status_code=status_code,
                    latency_ms=latency_ms,
                    version=version,
                    reason=reason[:MAX_AUDIT_TEXT],
                    checked_at=checked_at,
                )
            )

    @_guarded
    def consecutive_results(self, environment: str, health: str, limit: int = 1000) -> int:
        """How many of the environment's latest checks in a row had this result."""
        with self._session() as session:
            recent = session.scalars(
                select(HealthCheckRecord.health)
                .where(HealthCheckRecord.environment == environment)
                .order_by(HealthCheckRecord.id.desc())
                .limit(limit)
            ).all()
        count = 0
        for value in recent:
            if value != health:
                break
            count += 1
        return count

    @_guarded
    def health_check_count(self, environment: str | None = None) -> int:
        with self._session() as session:
            query = select(func.count(HealthCheckRecord.id))
            if environment is not None:
                query = query.where(HealthCheckRecord.environment == environment)
            return session.scalar(query) or 0

    # --- timers ------------------------------------------------------------------------------

    @_guarded
    def schedule_timer(
        self, kind: str, key: str, due_at: datetime, payload: dict[str, object] | None = None
    ) -> int:
        """Set the pending timer of (kind, key) to due_at, replacing any not yet fired."""
        with self._session() as session, session.begin():
            session.execute(
                delete(TimerRecord).where(
                    TimerRecord.kind == kind,
                    TimerRecord.key == key,
                    TimerRecord.fired_at.is_(None),
                )
            )
            record = TimerRecord(
                kind=kind, key=key, payload=json.dumps(payload or {}), due_at=due_at
            )
            session.add(record)
            session.flush()
            return record.id

    @_guarded
    def cancel_timers(self, kind: str, key: str) -> int:
        """Drop the pending timers of (kind, key); returns how many there were."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(TimerRecord).where(
                    TimerRecord.kind == kind,
                    TimerRecord.key == key,
                    TimerRecord.fired_at.is_(None),
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @_guarded
    def pending_timers(self, kind: str | None = None, key: str | None = None) -> list[Timer]:
        with self._session() as session:
            query = select(TimerRecord).where(TimerRecord.fired_at.is_(None))
            if kind is not None:
                query = query.where(TimerRecord.kind == kind)
            if key is not None:
                query = query.where(TimerRecord.key == key)
            rows = session.scalars(query.order_by(TimerRecord.due_at)).all()
        return [_timer(row) for row in rows]

    @_guarded
    def claim_due_timers(
        self, owner: str, now: datetime, lease: timedelta, limit: int = 100
    ) -> list[Timer]:
        """Claim up to `limit` due timers for `owner` until now + lease.

        Each claim is a conditional UPDATE, so of several bots sweeping one database exactly
        one wins a timer; a timer whose claimer died comes back when its lease runs out.
        """
        free = or_(TimerRecord.claimed_until.is_(None), TimerRecord.claimed_until < now)
        due = and_(TimerRecord.fired_at.is_(None), TimerRecord.due_at <= now, free)
        claimed: list[Timer] = []
        with self._session() as session:
            with session.begin():
                candidates = session.scalars(
                    select(TimerRecord.id).where(due).order_by(TimerRecord.due_at).limit(limit)
                ).all()
            for timer_id in candidates:
                with session.begin():
                    won = session.execute(
                        update(TimerRecord)
                        .where(TimerRecord.id == timer_id, due)
                        .values(
                            claimed_by=owner,
                            claimed_until=now + lease,
                            attempts=TimerRecord.attempts + 1,
                        )
                    )
                    if won.rowcount == 1:  # type: ignore[attr-defined]
                        row = session.get(TimerRecord, timer_id)
                        assert row is not None
                        claimed.append(_timer(row))
        return claimed

    @_guarded
    def finish_timer(self, timer_id: int, owner: str) -> bool:
        """Mark a claimed timer fired; False if the claim was lost (another bot has it now)."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(TimerRecord)
                .where(TimerRecord.id == timer_id, TimerRecord.claimed_by == owner)
                .values(fired_at=self.clock(), claimed_until=None)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def retry_timer(self, timer_id: int, owner: str, due_at: datetime) -> None:
        """Give a claimed timer back, due again at due_at (its handler failed)."""
        with self._session() as session, session.begin():
            session.execute(
                update(TimerRecord)
                .where(
                    TimerRecord.id == timer_id,
                    TimerRecord.claimed_by == owner,
                    TimerRecord.fired_at.is_(None),
                )
                .values(due_at=due_at, claimed_by=None, claimed_until=None)
            )


def _timer(row: TimerRecord) -> Timer:
    return Timer(
        id=row.id,
        kind=row.kind,
        key=row.key,
        payload=json.loads(row.payload or "{}"),
        due_at=_as_utc(row.due_at),  # type: ignore[arg-type]
        attempts=row.attempts,
    )
