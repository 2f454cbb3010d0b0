"""The audit log: who ran what, where, when, and how it ended."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _as_utc, _guarded


class AuditRecord(Base):
    """Who ran what, where, when, and how it ended: one row per command or button press."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # The per-user rate limits (bot/slack/limits.py) count a user's recent commands.
        Index("ix_audit_log_user_command_started", "user_id", "command", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    result: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


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


class AuditStore(StoreCore):
    """Store's audit log methods: a command's start and end, the latest entries."""

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
    def audit_times(self, user_id: str, command: str, since: datetime) -> list[datetime]:
        """When `user_id` ran `command` since `since` (refusals for a rate limit left out)."""
        with self._session() as session:
            rows = session.scalars(
                select(AuditRecord.started_at).where(
                    AuditRecord.user_id == user_id,
                    AuditRecord.command == command,
                    AuditRecord.started_at >= since,
                    AuditRecord.outcome != "limited",
                )
            ).all()
        return [_as_utc(row) for row in rows]  # type: ignore[misc]

    @_guarded
    def audit_times_of(
        self, user_ids: Collection[str], command: str, since: datetime
    ) -> dict[str, list[datetime]]:
        """audit_times for several users in one query: {user_id: times} (absent: none)."""
        with self._session() as session:
            rows = session.execute(
                select(AuditRecord.user_id, AuditRecord.started_at).where(
                    AuditRecord.user_id.in_(sorted(set(user_ids))),
                    AuditRecord.command == command,
                    AuditRecord.started_at >= since,
                    AuditRecord.outcome != "limited",
                )
            ).all()
        times: dict[str, list[datetime]] = {}
        for user_id, started_at in rows:
            times.setdefault(user_id, []).append(_as_utc(started_at))  # type: ignore[arg-type]
        return times

    @_guarded
    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        with self._session() as session:
            rows = session.scalars(
                select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
            ).all()
        return [_entry(row) for row in rows]

    @_guarded
    def audit_between(
        self, command: str, since: datetime, until: datetime, limit: int = 200
    ) -> list[AuditEntry]:
        """Runs of `command` started in [since, until], oldest first (a post-mortem's
        diagnoses)."""
        with self._session() as session:
            rows = session.scalars(
                select(AuditRecord)
                .where(
                    AuditRecord.command == command,
                    AuditRecord.started_at >= since,
                    AuditRecord.started_at <= until,
                )
                .order_by(AuditRecord.id)
                .limit(limit)
            ).all()
        return [_entry(row) for row in rows]


def _entry(row: AuditRecord) -> AuditEntry:
    return AuditEntry(
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
