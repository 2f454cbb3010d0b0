"""On-call overrides, and the hand-off messages sent (see bot/runbook/oncall).

Its tables register on the store's Base like every concern's, and migration 0002 makes them.
`OnCallStore` is built on a Store's engine (the runbook's on-call code takes only this part).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _as_utc, _guarded


class OverrideRecord(Base):
    """Someone on call for a level in place of its rotation, from starts_at until ends_at.

    A cancelled override keeps its row: its ends_at is brought forward to the cancel, so who
    was on call at any time stays answerable (who may press an incident's buttons).
    """

    __tablename__ = "oncall_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(Text, index=True)  # the escalation level's name
    user_id: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class HandoffNoticeRecord(Base):
    """One message about a hand-off (the DM to the incoming person, the channel's line),
    recorded once Slack accepted it — or refused it for good (`error`) — so a retried
    hand-off timer sends only what is missing."""

    __tablename__ = "oncall_handoff_notices"
    __table_args__ = (UniqueConstraint("level", "handoff_at", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(Text)
    handoff_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    target: Mapped[str] = mapped_column(String(64))  # a user id (the DM) or a channel id
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Override:
    id: int
    level: str
    user_id: str
    starts_at: datetime
    ends_at: datetime
    created_by: str
    created_at: datetime
    cancelled_by: str | None
    cancelled_at: datetime | None

    def active_at(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


class OnCallStore:
    """The store's on-call methods, on a Store's engine and clock."""

    def __init__(self, core: StoreCore) -> None:
        self.clock = core.clock
        self.engine = core.engine
        self._sessions = sessionmaker(core.engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    @_guarded
    def add_override(
        self, level: str, user_id: str, starts_at: datetime, ends_at: datetime, created_by: str
    ) -> Override:
        if ends_at <= starts_at:
            raise ValueError("an override must end after it starts")
        starts_at, ends_at = _utc(starts_at), _utc(ends_at)
        with self._session() as session, session.begin():
            record = OverrideRecord(
                level=level,
                user_id=user_id,
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=created_by,
                created_at=self.clock(),
            )
            session.add(record)
            session.flush()
            return _override(record)

    @_guarded
    def overrides(
        self,
        level: str | None = None,
        *,
        ending_after: datetime,
        starting_by: datetime | None = None,
    ) -> list[Override]:
        """Overrides that end after `ending_after` (and start by `starting_by`), oldest first."""
        with self._session() as session:
            query = select(OverrideRecord).where(OverrideRecord.ends_at > _utc(ending_after))
            if level is not None:
                query = query.where(OverrideRecord.level == level)
            if starting_by is not None:
                query = query.where(OverrideRecord.starts_at <= _utc(starting_by))
            rows = session.scalars(query.order_by(OverrideRecord.id)).all()
            return [_override(row) for row in rows]

    @_guarded
    def end_overrides(self, ids: Sequence[int], cancelled_by: str, at: datetime) -> list[Override]:
        """End the overrides of `ids` at `at` (those not ended by then); returns them."""
        ended: list[Override] = []
        at = _utc(at)
        with self._session() as session, session.begin():
            for override_id in ids:
                result = session.execute(
                    update(OverrideRecord)
                    .where(OverrideRecord.id == override_id, OverrideRecord.ends_at > at)
                    .values(ends_at=at, cancelled_by=cancelled_by, cancelled_at=at)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    row = session.get(OverrideRecord, override_id)
                    assert row is not None
                    ended.append(_override(row))
        return ended

    @_guarded
    def handoff_notices(self, level: str, handoff_at: datetime) -> set[str]:
        """The targets already sent (or refused for good) a message about this hand-off."""
        with self._session() as session:
            return set(
                session.scalars(
                    select(HandoffNoticeRecord.target).where(
                        HandoffNoticeRecord.level == level,
                        HandoffNoticeRecord.handoff_at == _utc(handoff_at),
                    )
                ).all()
            )

    @_guarded
    def record_handoff_notice(
        self, level: str, handoff_at: datetime, target: str, error: str | None = None
    ) -> bool:
        """Record a message about a hand-off; False if it was recorded already."""
        try:
            with self._session() as session, session.begin():
                session.add(
                    HandoffNoticeRecord(
                        level=level,
                        handoff_at=_utc(handoff_at),
                        target=target,
                        error=error[:MAX_AUDIT_TEXT] if error else None,
                        sent_at=self.clock(),
                    )
                )
        except IntegrityError:
            return False
        return True


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no offset: every time stored is UTC, so they compare as written.
    return moment.astimezone(UTC)


def _override(row: OverrideRecord) -> Override:
    return Override(
        id=row.id,
        level=row.level,
        user_id=row.user_id,
        starts_at=_as_utc(row.starts_at),  # type: ignore[arg-type]
        ends_at=_as_utc(row.ends_at),  # type: ignore[arg-type]
        created_by=row.created_by,
        created_at=_as_utc(row.created_at),  # type: ignore[arg-type]
        cancelled_by=row.cancelled_by,
        cancelled_at=_as_utc(row.cancelled_at),
    )
