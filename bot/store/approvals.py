"""Approval requests: production changes waiting for an approver's decision."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.base import Base, StoreCore, _as_utc, _guarded


class ApprovalRecord(Base):
    """A request that waits for an approver: kind 'deploy' or 'rollback', what in payload."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Set once, in the transaction that records the approved change's run (or when its start
    # was refused): the run key. An approved request without it was never started.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Approval:
    id: int
    kind: str
    environment: str
    requested_by: str
    payload: dict[str, object]
    state: str
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime
    expires_at: datetime
    channel: str | None
    message_ts: str | None
    started_at: datetime | None = None


class ApprovalStore(StoreCore):
    """Store's approval methods: a request, its message, and its one decision."""

    @_guarded
    def create_approval(
        self,
        *,
        kind: str,
        environment: str,
        requested_by: str,
        payload: dict[str, object],
        expires_at: datetime,
    ) -> Approval:
        with self._session() as session, session.begin():
            record = ApprovalRecord(
                kind=kind,
                environment=environment,
                requested_by=requested_by,
                payload=json.dumps(payload),
                state="pending",
                created_at=self.clock(),
                expires_at=expires_at,
            )
            session.add(record)
            session.flush()
            return _approval(record)

    @_guarded
    def set_approval_message(self, approval_id: int, channel: str, message_ts: str) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(ApprovalRecord)
                .where(ApprovalRecord.id == approval_id)
                .values(channel=channel, message_ts=message_ts)
            )

    @_guarded
    def decide_approval(self, approval_id: int, state: str, decided_by: str | None) -> bool:
        """Move a pending request to approved, rejected or expired: True for the one caller
        that did it. A double press, a duplicated delivery or a press after expiry gets False.
        """
        if state not in ("approved", "rejected", "expired"):
            raise ValueError(f"{state!r} is not a decision")
        now = self.clock()
        condition = [ApprovalRecord.id == approval_id, ApprovalRecord.state == "pending"]
        if state != "expired":
            condition.append(ApprovalRecord.expires_at > now)
        with self._session() as session, session.begin():
            result = session.execute(
                update(ApprovalRecord)
                .where(*condition)
                .values(state=state, decided_by=decided_by, decided_at=now)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def mark_approval_started(self, approval_id: int) -> bool:
        """The approved request's start was handled without a run (refused, not startable):
        True for the one caller that marked it."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(ApprovalRecord)
                .where(ApprovalRecord.id == approval_id, ApprovalRecord.started_at.is_(None))
                .values(started_at=self.clock())
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def approvals_not_started(self, limit: int = 100) -> list[Approval]:
        """Approved requests whose change never started (the bot died in between)."""
        with self._session() as session:
            rows = session.scalars(
                select(ApprovalRecord)
                .where(ApprovalRecord.state == "approved", ApprovalRecord.started_at.is_(None))
                .order_by(ApprovalRecord.id)
                .limit(limit)
            ).all()
        return [_approval(row) for row in rows]

    @_guarded
    def approval(self, approval_id: int) -> Approval | None:
        with self._session() as session:
            record = session.get(ApprovalRecord, approval_id)
            return _approval(record) if record is not None else None


def _approval(row: ApprovalRecord) -> Approval:
    return Approval(
        id=row.id,
        kind=row.kind,
        environment=row.environment,
        requested_by=row.requested_by,
        payload=json.loads(row.payload or "{}"),
        state=row.state,
        decided_by=row.decided_by,
        decided_at=_as_utc(row.decided_at),
        created_at=_as_utc(row.created_at),  # type: ignore[arg-type]
        expires_at=_as_utc(row.expires_at),  # type: ignore[arg-type]
        channel=row.channel,
        message_ts=row.message_ts,
        started_at=_as_utc(row.started_at),
    )
