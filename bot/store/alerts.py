"""Alerts: each (environment, metric)'s place in the alert state machine
(bot/runbook/alerts.py), the alerts it raised, their thread lines, and silences."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _as_utc, _guarded
from bot.store.leases import Fence, LeaseLost, hold
from bot.store.timers import NewTimer, TimerRecord, _set_timer, _waiting


class AlertStateRecord(Base):
    """Where one (environment, metric) stands in the alert state machine (bot/runbook/alerts.py).

    Written by the scheduled checks alone, a cycle's rows in one transaction; lists are JSON.
    `alert_id` is the last alert it raised. Silences are in their own table, so a press never
    races a cycle over one row. `version` goes up with every write, and a write names the
    version it read: one from a checker that was deposed meanwhile is refused.
    """

    __tablename__ = "alert_states"

    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    recent: Mapped[str] = mapped_column(Text, default="[]")
    readings: Mapped[str] = mapped_column(Text, default="[]")
    changes: Mapped[str] = mapped_column(Text, default="[]")
    flapping: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    sample: Mapped[str | None] = mapped_column(String(200), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class AlertRecord(Base):
    """One alert: from the check that fired it to the one that resolved it.

    `version` counts the changes its message must show; `shown_version` is what the posted
    message shows. A new alert after a resolution is a new row, with a new message.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    level: Mapped[str] = mapped_column(String(16))
    peak_level: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    incident_noted: Mapped[bool] = mapped_column(Boolean, default=False)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    post_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    shown_version: Mapped[int] = mapped_column(Integer, default=0)


class AlertEventRecord(Base):
    """A line for an alert's thread (raised, resolved, reminder …), posted once: `done`."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # retention
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class AlertSilenceRecord(Base):
    """An (environment, metric) silenced until a time by someone (the Silence button)."""

    __tablename__ = "alert_silences"

    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    silenced_by: Mapped[str] = mapped_column(String(64))
    silenced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class AlertStateRow:
    environment: str
    metric: str
    level: str = "Normal"
    recent: tuple[str, ...] = ()
    readings: tuple[float | None, ...] = ()
    changes: tuple[datetime, ...] = ()
    flapping: bool = False
    since: datetime | None = None
    value: float | None = None
    problem: str | None = None
    detail: str | None = None
    sample: str | None = None
    checked_at: datetime | None = None
    alert_id: int | None = None
    version: int = 0  # as read from the store; 0: not saved yet


class StaleAlertStates(LeaseLost):
    """Alert states were written by another checker since they were read: nothing written."""


@dataclass(frozen=True)
class Alert:
    id: int
    environment: str
    metric: str
    status: str
    level: str
    peak_level: str
    opened_at: datetime
    level_since: datetime
    resolved_at: datetime | None
    value: float | None
    problem: str | None
    detail: str | None
    acked_by: str | None
    acked_at: datetime | None
    incident_id: int | None
    incident_noted: bool
    channel: str | None
    ts: str | None
    post_error: str | None
    version: int
    shown_version: int


# What an alert change may set; identity, version and the message's record are the store's.
ALERT_FIELDS = frozenset(
    {
        "status",
        "level",
        "peak_level",
        "opened_at",
        "level_since",
        "resolved_at",
        "value",
        "problem",
        "detail",
        "acked_by",
        "acked_at",
        "incident_id",
        "incident_noted",
    }
)


@dataclass(frozen=True)
class AlertEvent:
    id: int
    alert_id: int
    kind: str
    detail: str
    at: datetime
    done: bool


@dataclass(frozen=True)
class AlertSilence:
    environment: str
    metric: str
    until: datetime
    silenced_by: str
    silenced_at: datetime


@dataclass(frozen=True)
class NewAlertEvent:
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class AlertWrite:
    """One alert's change in a cycle: a new alert (`alert_id` None) or an existing one's.

    `timers` and `cancel` get the alert's id (a new one's is known only once inserted);
    `bump` says the message must show the change (its version goes up).
    """

    environment: str
    metric: str
    alert_id: int | None
    values: Mapping[str, object]
    event: NewAlertEvent | None = None
    timers: Callable[[int], Sequence[NewTimer]] = lambda alert_id: ()
    cancel: Callable[[int], Sequence[tuple[str, str]]] = lambda alert_id: ()
    bump: bool = True


class AlertStore(StoreCore):
    """Store's alert methods: the cycle's states, alerts, thread lines, silences."""

    @_guarded
    def alert_states(self) -> list[AlertStateRow]:
        with self._session() as session:
            rows = session.scalars(select(AlertStateRecord)).all()
            return [_alert_state(row) for row in rows]

    @_guarded
    def alert_state(self, environment: str, metric: str) -> AlertStateRow | None:
        with self._session() as session:
            row = session.get(AlertStateRecord, (environment, metric))
            return _alert_state(row) if row is not None else None

    @_guarded
    def save_alert_states(
        self,
        states: Sequence[AlertStateRow],
        writes: Sequence[AlertWrite] = (),
        fence: Fence | None = None,
    ) -> dict[tuple[str, str], int]:
        """A cycle's states and the alert changes they made, in one transaction.

        Each state is written only if it is still at the version it was read at (0: not in
        the store yet), and with `fence` only while its lease is held: else StaleAlertStates
        or LeaseLost, and nothing of the cycle is written. Returns the id of each new alert by
        (environment, metric); the state of that pair is saved pointing at it. Existing states
        are updated in one executemany.
        """
        now = self.clock()
        created: dict[tuple[str, str], int] = {}
        try:
            with self._session() as session, session.begin():
                if fence is not None:
                    hold(session, fence)
                for write in writes:
                    created.update(self._write_alert(session, write, now))
                rows = [
                    _alert_state_values(
                        replace(state, alert_id=created[(state.environment, state.metric)])
                        if (state.environment, state.metric) in created
                        else state
                    )
                    for state in states
                ]
                new = [row for row in rows if row["version"] == 0]
                old = [row for row in rows if row["version"] != 0]
                if new:
                    session.execute(
                        insert(AlertStateRecord), [{**row, "version": 1} for row in new]
                    )
                if old:
                    table = AlertStateRecord.__table__
                    updated = session.execute(
                        update(table)
                        .where(
                            table.c.environment == bindparam("key_environment"),
                            table.c.metric == bindparam("key_metric"),
                            table.c.version == bindparam("key_version"),
                        )
                        .values(version=table.c.version + 1),
                        [_keyed(row) for row in old],
                    )
                    if updated.rowcount != len(old):  # type: ignore[attr-defined]
                        raise StaleAlertStates(
                            f"{len(old) - updated.rowcount} alert state(s) were changed by "  # type: ignore[attr-defined]
                            "another checker since they were read"
                        )
        except IntegrityError as exc:
            raise StaleAlertStates(
                "alert states were created by another checker since they were read"
            ) from exc
        return created

    def _write_alert(
        self, session: Session, write: AlertWrite, now: datetime
    ) -> dict[tuple[str, str], int]:
        """One alert's change inside save_alert_states; the new alert's id, if it made one."""
        unknown = set(write.values) - ALERT_FIELDS
        if unknown:
            raise ValueError(f"not alert fields: {sorted(unknown)}")
        created: dict[tuple[str, str], int] = {}
        if write.alert_id is None:
            record = AlertRecord(
                environment=write.environment,
                metric=write.metric,
                **write.values,
                version=1,
                shown_version=0,
            )
            session.add(record)
            session.flush()
            alert_id = created[(write.environment, write.metric)] = record.id
        else:
            alert_id = write.alert_id
            values = dict(write.values)
            if write.bump:
                values["version"] = AlertRecord.version + 1
            if values:
                session.execute(
                    update(AlertRecord).where(AlertRecord.id == alert_id).values(**values)
                )
        timers, cancel = write.timers(alert_id), write.cancel(alert_id)
        self._alert_effects(session, alert_id, write.event, timers, cancel, now)
        return created

    @staticmethod
    def _alert_effects(
        session: Session,
        alert_id: int,
        event: NewAlertEvent | None,
        timers: Sequence[NewTimer],
        cancel: Sequence[tuple[str, str]],
        now: datetime,
    ) -> None:
        if event is not None:
            session.add(
                AlertEventRecord(
                    alert_id=alert_id,
                    kind=event.kind,
                    detail=event.detail[:MAX_AUDIT_TEXT],
                    at=now,
                    done=False,
                )
            )
        for kind, key in cancel:
            session.execute(delete(TimerRecord).where(_waiting(kind, key, now)))
        for timer in timers:
            _set_timer(session, timer, now)

    @_guarded
    def alert(self, alert_id: int) -> Alert | None:
        with self._session() as session:
            row = session.get(AlertRecord, alert_id)
            return _alert(row) if row is not None else None

    @_guarded
    def alerts(self, environment: str | None = None, status: str | None = None) -> list[Alert]:
        """Alerts, oldest first (filtered by environment and status when given)."""
        with self._session() as session:
            query = select(AlertRecord)
            if environment is not None:
                query = query.where(AlertRecord.environment == environment)
            if status is not None:
                query = query.where(AlertRecord.status == status)
            return [_alert(row) for row in session.scalars(query.order_by(AlertRecord.id)).all()]

    @_guarded
    def alerts_about(
        self, incident_id: int, environment: str | None, since: datetime, until: datetime
    ) -> list[Alert]:
        """The alerts an incident's post-mortem tells: those linked to it, and those of its
        environment open at some time in [since, until]; oldest first."""
        with self._session() as session:
            linked = AlertRecord.incident_id == incident_id
            query = select(AlertRecord).where(linked)
            if environment is not None:
                overlapping = and_(
                    AlertRecord.environment == environment,
                    AlertRecord.opened_at <= until,
                    or_(AlertRecord.resolved_at.is_(None), AlertRecord.resolved_at >= since),
                )
                query = select(AlertRecord).where(or_(linked, overlapping))
            return [_alert(row) for row in session.scalars(query.order_by(AlertRecord.id)).all()]

    @_guarded
    def change_alert(
        self,
        alert_id: int,
        expected_version: int,
        values: Mapping[str, object],
        event: NewAlertEvent | None = None,
        timers: Sequence[NewTimer] = (),
        cancel: Sequence[tuple[str, str]] = (),
        *,
        bump: bool = True,
    ) -> Alert | None:
        """Apply a change (a press, a timer's) if the alert is still at expected_version, with
        its event and timers in the same transaction; None if it moved on meanwhile.

        `bump`: the message must show the change (its version goes up).
        """
        unknown = set(values) - ALERT_FIELDS
        if unknown:
            raise ValueError(f"not alert fields: {sorted(unknown)}")
        now = self.clock()
        with self._session() as session, session.begin():
            result = session.execute(
                update(AlertRecord)
                .where(AlertRecord.id == alert_id, AlertRecord.version == expected_version)
                .values(**values, version=expected_version + (1 if bump else 0))
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            self._alert_effects(session, alert_id, event, timers, cancel, now)
            row = session.get(AlertRecord, alert_id)
            assert row is not None
            return _alert(row)

    @_guarded
    def add_alert_event(
        self, alert_id: int, event: NewAlertEvent | None, timers: Sequence[NewTimer] = ()
    ) -> None:
        """A thread line (a reminder, say) and timers, without changing what the message shows."""
        with self._session() as session, session.begin():
            self._alert_effects(session, alert_id, event, timers, (), self.clock())

    @_guarded
    def alert_events(self, alert_id: int, *, pending: bool = False) -> list[AlertEvent]:
        with self._session() as session:
            query = select(AlertEventRecord).where(AlertEventRecord.alert_id == alert_id)
            if pending:
                query = query.where(AlertEventRecord.done.is_(False))
            rows = session.scalars(query.order_by(AlertEventRecord.id)).all()
            return [_alert_event(row) for row in rows]

    @_guarded
    def finish_alert_event(self, event_id: int) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(AlertEventRecord).where(AlertEventRecord.id == event_id).values(done=True)
            )

    @_guarded
    def record_alert_message(
        self,
        alert_id: int,
        *,
        channel: str | None,
        ts: str | None,
        shown_version: int,
        error: str | None = None,
    ) -> bool:
        """Record the alert's posted message (or why Slack refused it for good); False if one
        was recorded already."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(AlertRecord)
                .where(
                    AlertRecord.id == alert_id,
                    AlertRecord.ts.is_(None),
                    AlertRecord.post_error.is_(None),
                )
                .values(
                    channel=channel,
                    ts=ts,
                    shown_version=shown_version,
                    post_error=error[:MAX_AUDIT_TEXT] if error else None,
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def mark_alert_shown(self, alert_id: int, version: int) -> None:
        """The alert's message now shows it as of version (never moved backwards)."""
        with self._session() as session, session.begin():
            session.execute(
                update(AlertRecord)
                .where(AlertRecord.id == alert_id, AlertRecord.shown_version < version)
                .values(shown_version=version)
            )

    @_guarded
    def silence_alerts(
        self,
        environment: str,
        metric: str,
        until: datetime,
        silenced_by: str,
        timers: Sequence[NewTimer] = (),
        began: datetime | None = None,
    ) -> AlertSilence:
        """Silence (environment, metric) until `until`, replacing a silence it had. `began` is
        when the silence began (a press that extends one keeps its start: silence_max counts
        from there), now if not given; `silenced_by` is whoever pressed last."""
        now = self.clock()
        with self._session() as session, session.begin():
            row = session.get(AlertSilenceRecord, (environment, metric))
            if row is None:
                row = AlertSilenceRecord(environment=environment, metric=metric)
                session.add(row)
            row.until, row.silenced_by, row.silenced_at = until, silenced_by, began or now
            for timer in timers:
                _set_timer(session, timer, now)
            session.flush()
            return _alert_silence(row)

    @_guarded
    def alert_silence(self, environment: str, metric: str) -> AlertSilence | None:
        with self._session() as session:
            row = session.get(AlertSilenceRecord, (environment, metric))
            return _alert_silence(row) if row is not None else None

    @_guarded
    def end_alert_silence(self, environment: str, metric: str, until: datetime) -> bool:
        """Lift the silence that was set until `until`; False if it was replaced or lifted."""
        with self._session() as session, session.begin():
            row = session.get(AlertSilenceRecord, (environment, metric))
            if row is None or _as_utc(row.until) != until:
                return False
            session.delete(row)
            return True


def _alert_state(row: AlertStateRecord) -> AlertStateRow:
    return AlertStateRow(
        environment=row.environment,
        metric=row.metric,
        level=row.level,
        recent=tuple(json.loads(row.recent or "[]")),
        readings=tuple(json.loads(row.readings or "[]")),
        changes=tuple(
            _as_utc(datetime.fromisoformat(text))  # type: ignore[misc]
            for text in json.loads(row.changes or "[]")
        ),
        flapping=bool(row.flapping),
        since=_as_utc(row.since),
        value=row.value,
        problem=row.problem,
        detail=row.detail,
        sample=row.sample,
        checked_at=_as_utc(row.checked_at),
        alert_id=row.alert_id,
        version=row.version,
    )


def _keyed(row: dict[str, object]) -> dict[str, object]:
    """An existing state's values for the UPDATE: its key and the version it was read at."""
    values = {k: v for k, v in row.items() if k not in ("environment", "metric", "version")}
    return {
        **values,
        "key_environment": row["environment"],
        "key_metric": row["metric"],
        "key_version": row["version"],
    }


def _alert_state_values(state: AlertStateRow) -> dict[str, object]:
    return {
        "environment": state.environment,
        "metric": state.metric,
        "level": state.level,
        "recent": json.dumps(list(state.recent)),
        "readings": json.dumps(list(state.readings)),
        "changes": json.dumps([moment.isoformat() for moment in state.changes]),
        "flapping": state.flapping,
        "since": state.since,
        "value": state.value,
        "problem": state.problem[:MAX_AUDIT_TEXT] if state.problem else state.problem,
        "detail": state.detail[:MAX_AUDIT_TEXT] if state.detail else state.detail,
        "sample": state.sample[:200] if state.sample else state.sample,
        "checked_at": state.checked_at,
        "alert_id": state.alert_id,
        "version": state.version,
    }


def _alert(row: AlertRecord) -> Alert:
    values = {f.name: getattr(row, f.name) for f in fields(Alert)}
    for name in ("opened_at", "level_since", "resolved_at", "acked_at"):
        values[name] = _as_utc(values[name])
    values["incident_noted"] = bool(values["incident_noted"])
    return Alert(**values)


def _alert_event(row: AlertEventRecord) -> AlertEvent:
    return AlertEvent(
        id=row.id,
        alert_id=row.alert_id,
        kind=row.kind,
        detail=row.detail,
        at=_as_utc(row.at),  # type: ignore[arg-type]
        done=bool(row.done),
    )


def _alert_silence(row: AlertSilenceRecord) -> AlertSilence:
    return AlertSilence(
        environment=row.environment,
        metric=row.metric,
        until=_as_utc(row.until),  # type: ignore[arg-type]
        silenced_by=row.silenced_by,
        silenced_at=_as_utc(row.silenced_at),  # type: ignore[arg-type]
    )
