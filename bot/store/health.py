"""Health check history and each environment's streak (how many checks in a row had its
latest result)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _guarded


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


STREAKS = HealthStreakRecord.__table__


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


class HealthStore(StoreCore):
    """Store's health check methods: batches of checks, streaks, pruning the history."""

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
        # Core statements, not ORM objects: a batch is up to a fleet (1,000 environments), and
        # loading and flushing an object per row was half of this method's samples in the
        # profile of /health all over 1,000 environments.
        with self._health_writes, self._session() as session, session.begin():
            known: dict[str, tuple[str, int]] = {
                environment: (health, streak)
                for environment, health, streak in session.execute(
                    select(STREAKS.c.environment, STREAKS.c.health, STREAKS.c.streak)
                    .where(STREAKS.c.environment.in_(names))
                    .with_for_update()
                )
            }
            # Environments new to the streaks table: counted from the history once, and only
            # those that have one (a fleet's first check: one query, not one per environment).
            unseen = names - known.keys()
            with_history = (
                set(
                    session.scalars(
                        select(HealthCheckRecord.environment)
                        .where(HealthCheckRecord.environment.in_(unseen))
                        .distinct()
                    )
                )
                if unseen
                else set()
            )
            streaks: dict[str, tuple[str, int]] = {}
            for environment in unseen:
                latest, streak = (
                    self._latest_streak(session, environment)
                    if environment in with_history
                    else (None, 0)
                )
                streaks[environment] = (latest or "", streak)
            streaks.update(known)
            counted: list[int] = []
            for check in checks:
                health, streak = streaks[check.environment]
                streak = streak + 1 if health == check.health else 1
                streaks[check.environment] = (check.health, streak)
                counted.append(streak)
            if unseen:
                session.execute(
                    insert(STREAKS),
                    [
                        {
                            "environment": name,
                            "health": streaks[name][0],
                            "streak": streaks[name][1],
                        }
                        for name in unseen
                    ],
                )
            if known:
                # Bound names differ from the columns': SQLAlchemy reserves those for .values().
                session.execute(
                    update(STREAKS)
                    .where(STREAKS.c.environment == bindparam("name"))
                    .values(health=bindparam("latest"), streak=bindparam("count")),
                    [
                        {"name": name, "latest": streaks[name][0], "count": streaks[name][1]}
                        for name in known
                    ],
                )
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
    def prune_health_checks(self, before: datetime) -> int:
        """Drop the health check history from before `before` (the streaks stay); returns how
        many rows went. The scheduled checks add a row per environment per check_interval."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(HealthCheckRecord).where(HealthCheckRecord.checked_at < before)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @_guarded
    def health_check_count(self, environment: str | None = None) -> int:
        with self._session() as session:
            query = select(func.count(HealthCheckRecord.id))
            if environment is not None:
                query = query.where(HealthCheckRecord.environment == environment)
            return session.scalar(query) or 0
