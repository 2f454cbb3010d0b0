"""Incidents, their timelines and the messages posted about them (see
bot/runbook/escalation.py for the states)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _as_utc, _guarded
from bot.store.outbox import NewDelivery, _enqueue
from bot.store.timers import NewTimer, TimerRecord, _set_timer, _waiting


class IncidentRecord(Base):
    """An incident and where its escalation stands (see bot/runbook/escalation.py).

    `seq` counts its state changes: every change is a conditional UPDATE on the seq its
    author saw, so of two simultaneous presses exactly one wins. `plan` is the escalation
    path frozen when it was opened (JSON); a config change never reshapes a running one.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        # One unresolved incident per dedupe key, whoever opens it at the same moment (two
        # replicas, an alert and an Escalate press): the database says so, not a check first.
        Index(
            "uq_incidents_open_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    summary: Mapped[str] = mapped_column(Text)
    severity: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(64))
    link: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    # Where it happens (`/escalate … --env`, an alert's, a rollback's): what its checklist's
    # buttons act on. None: not said.
    environment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    plan: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    seq: Mapped[int] = mapped_column(Integer, default=1)
    level: Mapped[int] = mapped_column(Integer, default=0)
    top_level: Mapped[int] = mapped_column(Integer, default=0)
    paged_seq: Mapped[int] = mapped_column(Integer, default=1)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_acknowledged_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sync_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sync_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IncidentEventRecord(Base):
    """The incident's timeline: one row per step, written with the step's state change."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IncidentMessageRecord(Base):
    """One message the bot posted about an incident: the channel card, a page, a thread line.

    Recorded as soon as Slack accepted it, so a retried delivery never posts it twice, and
    with its ts, so every copy can be brought up to date. `error` marks one Slack refused for
    good (an unknown user, say): it is not tried again.
    """

    __tablename__ = "incident_messages"
    __table_args__ = (UniqueConstraint("incident_id", "role", "step", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, index=True)
    role: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    shown_seq: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class NewEvent:
    kind: str
    level: int
    user_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Incident:
    id: int
    summary: str
    severity: int
    source: str
    link: str | None
    opened_by: str | None
    channel: str | None
    dedupe_key: str | None
    plan: dict[str, Any]
    status: str
    seq: int
    level: int
    top_level: int
    paged_seq: int
    deadline_at: datetime | None
    opened_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    first_acknowledged_at: datetime | None
    reminded_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    environment: str | None = None


# What a state change may set; the rest (identity, the frozen plan, seq) is the store's.
INCIDENT_STATE_FIELDS = frozenset(
    {
        "status",
        "level",
        "top_level",
        "paged_seq",
        "deadline_at",
        "acknowledged_by",
        "acknowledged_at",
        "first_acknowledged_at",
        "reminded_at",
        "resolved_by",
        "resolved_at",
    }
)


@dataclass(frozen=True)
class IncidentEvent:
    id: int
    incident_id: int
    seq: int
    kind: str
    level: int
    user_id: str | None
    detail: str
    at: datetime


@dataclass(frozen=True)
class IncidentMessage:
    id: int
    incident_id: int
    role: str
    step: int
    target: str
    channel: str | None
    ts: str | None
    shown_seq: int
    error: str | None


_OPEN_TRIES = 3


def _open_with_key(session: Session, dedupe_key: str | None) -> IncidentRecord | None:
    if dedupe_key is None:
        return None
    return session.scalars(
        select(IncidentRecord)
        .where(IncidentRecord.dedupe_key == dedupe_key, IncidentRecord.status != "resolved")
        .order_by(IncidentRecord.id)
        .limit(1)
    ).first()


class IncidentStore(StoreCore):
    """Store's incident methods: open, change (on the seq seen), timeline, messages."""

    @_guarded
    def create_incident(
        self,
        *,
        summary: str,
        severity: int,
        source: str,
        link: str | None,
        opened_by: str | None,
        channel: str | None,
        dedupe_key: str | None,
        plan: Mapping[str, Any],
        status: str,
        deadline_at: datetime | None,
        opened_at: datetime,
        event: NewEvent,
        timers: Callable[[int], Sequence[NewTimer]],
        deliveries: Callable[[int], Sequence[NewDelivery]] = lambda incident_id: (),
        environment: str | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident with its first event, timers and pages, in one transaction.

        `timers` and `deliveries` get the new incident's id. With a `dedupe_key` that an
        unresolved incident already has, nothing is written and that incident comes back with
        False: a unique index on the open incidents' keys makes that hold when two open one at
        once (the loser's insert fails; it then reads the winner's).
        """
        for _ in range(_OPEN_TRIES):
            try:
                with self._session() as session, session.begin():
                    existing = _open_with_key(session, dedupe_key)
                    if existing is not None:
                        return _incident(existing), False
                    record = IncidentRecord(
                        summary=summary,
                        severity=severity,
                        source=source,
                        link=link,
                        opened_by=opened_by,
                        channel=channel,
                        dedupe_key=dedupe_key,
                        environment=environment,
                        plan=json.dumps(plan),
                        status=status,
                        seq=1,
                        level=0,
                        top_level=0,
                        paged_seq=1,
                        deadline_at=deadline_at,
                        opened_at=opened_at,
                    )
                    session.add(record)
                    session.flush()
                    self._add_event(session, record.id, 1, event, opened_at)
                    for timer in timers(record.id):
                        _set_timer(session, timer, opened_at)
                    for delivery in deliveries(record.id):
                        _enqueue(session, delivery, opened_at)
                    return _incident(record), True
            except IntegrityError:
                if dedupe_key is None:
                    raise
                # Someone opened it between our look and our insert: the next pass finds it
                # (or, resolved meanwhile, opens a new one).
        raise IntegrityError(
            "create_incident", {"dedupe_key": dedupe_key}, Exception("kept colliding")
        )

    @_guarded
    def open_incident_with_key(self, dedupe_key: str) -> Incident | None:
        with self._session() as session:
            row = _open_with_key(session, dedupe_key)
            return _incident(row) if row is not None else None

    @_guarded
    def incidents_opened(self, opened_by: str, source: str, since: datetime) -> list[datetime]:
        """When `opened_by` opened incidents from `source` since `since` (the /escalate rate)."""
        with self._session() as session:
            rows = session.scalars(
                select(IncidentRecord.opened_at).where(
                    IncidentRecord.opened_by == opened_by,
                    IncidentRecord.source == source,
                    IncidentRecord.opened_at >= since,
                )
            ).all()
        return [_as_utc(row) for row in rows]  # type: ignore[misc]

    @_guarded
    def change_incident(
        self,
        incident_id: int,
        expected_seq: int,
        values: Mapping[str, object],
        event: NewEvent,
        timers: Sequence[NewTimer] = (),
        cancel: Sequence[tuple[str, str]] = (),
        deliveries: Sequence[NewDelivery] = (),
    ) -> Incident | None:
        """Apply a state change if the incident is still at expected_seq; None if it moved on.

        The change, its timeline event, its timers (set and cancelled) and its pages (outbox
        deliveries) are one transaction: a crash leaves either all of them or none.
        """
        unknown = set(values) - INCIDENT_STATE_FIELDS
        if unknown:
            raise ValueError(f"not incident state: {sorted(unknown)}")
        now = self.clock()
        with self._session() as session, session.begin():
            result = session.execute(
                update(IncidentRecord)
                .where(IncidentRecord.id == incident_id, IncidentRecord.seq == expected_seq)
                .values(**values, seq=expected_seq + 1)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            self._add_event(session, incident_id, expected_seq + 1, event, now)
            for kind, key in cancel:
                session.execute(delete(TimerRecord).where(_waiting(kind, key, now)))
            for timer in timers:
                _set_timer(session, timer, now)
            for delivery in deliveries:
                _enqueue(session, delivery, now)
            row = session.get(IncidentRecord, incident_id)
            assert row is not None
            return _incident(row)

    @_guarded
    def note_incident(
        self,
        incident_id: int,
        event: NewEvent,
        timers: Callable[[int], Sequence[NewTimer]] = lambda event_id: (),
    ) -> IncidentEvent | None:
        """Add a line to the timeline without changing the state (None: no such incident).

        `timers` gets the new event's id.
        """
        with self._session() as session, session.begin():
            row = session.get(IncidentRecord, incident_id)
            if row is None:
                return None
            now = self.clock()
            record = self._add_event(session, incident_id, row.seq, event, now)
            for timer in timers(record.id):
                _set_timer(session, timer, now)
            return _incident_event(record)

    @staticmethod
    def _add_event(
        session: Session, incident_id: int, seq: int, event: NewEvent, at: datetime
    ) -> IncidentEventRecord:
        record = IncidentEventRecord(
            incident_id=incident_id,
            seq=seq,
            kind=event.kind,
            level=event.level,
            user_id=event.user_id,
            detail=event.detail[:MAX_AUDIT_TEXT],
            at=at,
        )
        session.add(record)
        session.flush()
        return record

    @_guarded
    def incident(self, incident_id: int) -> Incident | None:
        with self._session() as session:
            row = session.get(IncidentRecord, incident_id)
            return _incident(row) if row is not None else None

    @_guarded
    def unresolved_incidents(self, limit: int = 100) -> list[Incident]:
        """Open and acknowledged incidents, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(IncidentRecord)
                .where(IncidentRecord.status != "resolved")
                .order_by(IncidentRecord.id)
                .limit(limit)
            ).all()
            return [_incident(row) for row in rows]

    @_guarded
    def incident_events(self, incident_id: int) -> list[IncidentEvent]:
        with self._session() as session:
            rows = session.scalars(
                select(IncidentEventRecord)
                .where(IncidentEventRecord.incident_id == incident_id)
                .order_by(IncidentEventRecord.id)
            ).all()
            return [_incident_event(row) for row in rows]

    @_guarded
    def incident_messages(self, incident_id: int) -> list[IncidentMessage]:
        with self._session() as session:
            rows = session.scalars(
                select(IncidentMessageRecord)
                .where(IncidentMessageRecord.incident_id == incident_id)
                .order_by(IncidentMessageRecord.id)
            ).all()
            return [_incident_message(row) for row in rows]

    @_guarded
    def record_incident_message(
        self,
        incident_id: int,
        *,
        role: str,
        step: int,
        target: str,
        channel: str | None,
        ts: str | None,
        shown_seq: int,
        error: str | None = None,
    ) -> bool:
        """Record a posted (or refused) message; False if it was recorded already."""
        try:
            with self._session() as session, session.begin():
                session.add(
                    IncidentMessageRecord(
                        incident_id=incident_id,
                        role=role,
                        step=step,
                        target=target,
                        channel=channel,
                        ts=ts,
                        shown_seq=shown_seq,
                        error=error[:MAX_AUDIT_TEXT] if error else None,
                        posted_at=self.clock(),
                    )
                )
        except IntegrityError:
            return False
        return True

    @_guarded
    def mark_incident_message_shown(self, message_id: int, seq: int) -> None:
        """The copy now shows the incident as of seq (never moved backwards)."""
        with self._session() as session, session.begin():
            session.execute(
                update(IncidentMessageRecord)
                .where(
                    IncidentMessageRecord.id == message_id, IncidentMessageRecord.shown_seq < seq
                )
                .values(shown_seq=seq)
            )

    @_guarded
    def lease_incident_sync(
        self, incident_id: int, owner: str, now: datetime, lease: timedelta
    ) -> bool:
        """Take the right to post about an incident until now + lease (one poster at a time)."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(IncidentRecord)
                .where(
                    IncidentRecord.id == incident_id,
                    or_(
                        IncidentRecord.sync_owner.is_(None),
                        IncidentRecord.sync_owner == owner,
                        IncidentRecord.sync_until < now,
                    ),
                )
                .values(sync_owner=owner, sync_until=now + lease)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def release_incident_sync(self, incident_id: int, owner: str) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(IncidentRecord)
                .where(IncidentRecord.id == incident_id, IncidentRecord.sync_owner == owner)
                .values(sync_owner=None, sync_until=None)
            )


def _incident(row: IncidentRecord) -> Incident:
    values = {f.name: getattr(row, f.name) for f in fields(Incident)}
    values["plan"] = json.loads(row.plan)
    for name in (
        "deadline_at",
        "opened_at",
        "acknowledged_at",
        "first_acknowledged_at",
        "reminded_at",
        "resolved_at",
    ):
        values[name] = _as_utc(values[name])
    return Incident(**values)


def _incident_event(row: IncidentEventRecord) -> IncidentEvent:
    return IncidentEvent(
        id=row.id,
        incident_id=row.incident_id,
        seq=row.seq,
        kind=row.kind,
        level=row.level,
        user_id=row.user_id,
        detail=row.detail,
        at=_as_utc(row.at),  # type: ignore[arg-type]
    )


def _incident_message(row: IncidentMessageRecord) -> IncidentMessage:
    return IncidentMessage(
        id=row.id,
        incident_id=row.incident_id,
        role=row.role,
        step=row.step,
        target=row.target,
        channel=row.channel,
        ts=row.ts,
        shown_seq=row.shown_seq,
        error=row.error,
    )
