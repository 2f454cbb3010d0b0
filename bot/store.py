"""Persistence: what must outlive a restart, behind SQLAlchemy.

SQLite by default (a file under EVENTMESH_DATA_DIR); any SQLAlchemy URL works, and the test
suite runs the same tests on PostgreSQL. The methods are synchronous and short: callers on
the event loop run them with `asyncio.to_thread` so a slow disk never delays an ack.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from bot.clock import Clock, utc_now

# Long free text (a pasted 5,000-character command) is cut, not refused: the audit must record
# that it happened without letting one user fill the database.
MAX_AUDIT_TEXT = 2000
# The tail of a failed step's output kept with it (the thread shows the last lines).
MAX_STEP_OUTPUT = 8000


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


class IncidentRecord(Base):
    """An incident and where its escalation stands (see bot/runbook/escalation.py).

    `seq` counts its state changes: every change is a conditional UPDATE on the seq its
    author saw, so of two simultaneous presses exactly one wins. `plan` is the escalation
    path frozen when it was opened (JSON); a config change never reshapes a running one.
    """

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    summary: Mapped[str] = mapped_column(Text)
    severity: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(64))
    link: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
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


class DeploymentRecord(Base):
    """One /deploy (or /rollback) run: who asked, what, how it went, and where it is shown.

    `owner` names the bot process running it and `heartbeat_at` says it is still alive, so a
    deployment left 'running' by a crashed bot is found and marked interrupted.
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="deploy")
    environment: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    options: Mapped[str] = mapped_column(Text, default="{}")
    requested_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    step: Mapped[str] = mapped_column(String(32), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    hosts: Mapped[str] = mapped_column(Text, default="{}")
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    permalink: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str] = mapped_column(String(128), default="")
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancel_requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentStepRecord(Base):
    """One step of a deployment on one host (or on the bot's machine: host '')."""

    __tablename__ = "deployment_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    step: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EnvironmentLockRecord(Base):
    """At most one row per environment: whoever holds it may change the environment.

    The primary key is what makes acquiring atomic: of two concurrent INSERTs one fails.
    """

    __tablename__ = "environment_locks"

    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # deploy | rollback | manual
    holder: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    permalink: Mapped[str | None] = mapped_column(Text, nullable=True)


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


@dataclass(frozen=True)
class Timer:
    id: int
    kind: str
    key: str
    payload: dict[str, object]
    due_at: datetime
    attempts: int


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


@dataclass(frozen=True)
class NewTimer:
    """A timer to set in the same transaction as the change that needs it."""

    kind: str
    key: str
    due_at: datetime
    payload: dict[str, object] = field(default_factory=dict)


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


class AlertStateRecord(Base):
    """Where one (environment, metric) stands in the alert state machine (bot/runbook/alerts.py).

    Written by the scheduled checks alone, a cycle's rows in one transaction; lists are JSON.
    `alert_id` is the last alert it raised. Silences are in their own table, so a press never
    races a cycle over one row.
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
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
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


# --- deployments, locks and approvals: what the store hands back ---------------------------

RUNNING = "running"
# How a deployment can end; 'interrupted' is set for it when its bot died while it ran.
FINISHED_STATES = (
    "succeeded",
    "failed",
    "rolled_back",
    "rollback_failed",
    "cancelled",
    "interrupted",
)


@dataclass(frozen=True)
class Deployment:
    id: int
    kind: str
    environment: str
    version: str | None
    options: dict[str, object]
    requested_by: str
    approved_by: str | None
    state: str
    step: str
    summary: str
    hosts: dict[str, dict[str, object]]
    channel: str | None
    message_ts: str | None
    permalink: str | None
    owner: str
    heartbeat_at: datetime
    cancel_requested_by: str | None
    started_at: datetime
    finished_at: datetime | None

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None


@dataclass(frozen=True)
class DeploymentStep:
    id: int
    deployment_id: int
    step: str
    host: str
    state: str
    detail: str
    output: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class EnvironmentLock:
    environment: str
    token: str
    kind: str
    holder: str
    reason: str
    deployment_id: int | None
    acquired_at: datetime
    channel: str | None
    permalink: str | None


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


@dataclass(frozen=True)
class LockHeld:
    """An environment could not be locked: this is who holds it."""

    lock: EnvironmentLock


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

    # --- timers ------------------------------------------------------------------------------

    @_guarded
    def schedule_timer(
        self, kind: str, key: str, due_at: datetime, payload: dict[str, object] | None = None
    ) -> int:
        """Set the pending timer of (kind, key) to due_at, replacing any not yet started."""
        with self._session() as session, session.begin():
            return _set_timer(session, NewTimer(kind, key, due_at, payload or {}), self.clock())

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

    # --- alerts ------------------------------------------------------------------------------

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
        self, states: Sequence[AlertStateRow], writes: Sequence[AlertWrite] = ()
    ) -> dict[tuple[str, str], int]:
        """A cycle's states and the alert changes they made, in one transaction.

        Returns the id of each new alert by (environment, metric); the state of that pair is
        saved pointing at it. Existing states are updated in one executemany.
        """
        now = self.clock()
        created: dict[tuple[str, str], int] = {}
        with self._session() as session, session.begin():
            for write in writes:
                key = (write.environment, write.metric)
                unknown = set(write.values) - ALERT_FIELDS
                if unknown:
                    raise ValueError(f"not alert fields: {sorted(unknown)}")
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
                    alert_id = created[key] = record.id
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
            rows = [
                _alert_state_values(
                    replace(state, alert_id=created[(state.environment, state.metric)])
                    if (state.environment, state.metric) in created
                    else state
                )
                for state in states
            ]
            if rows:
                keys = [(row["environment"], row["metric"]) for row in rows]
                existing = {
                    (environment, metric)
                    for environment, metric in session.execute(
                        select(AlertStateRecord.environment, AlertStateRecord.metric).where(
                            tuple_(AlertStateRecord.environment, AlertStateRecord.metric).in_(keys)
                        )
                    )
                }
                old = [row for row in rows if (row["environment"], row["metric"]) in existing]
                new = [row for row in rows if (row["environment"], row["metric"]) not in existing]
                if new:
                    session.execute(insert(AlertStateRecord), new)
                if old:
                    session.execute(update(AlertStateRecord), old)
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
    ) -> AlertSilence:
        """Silence (environment, metric) until `until`, replacing a silence it had."""
        now = self.clock()
        with self._session() as session, session.begin():
            row = session.get(AlertSilenceRecord, (environment, metric))
            if row is None:
                row = AlertSilenceRecord(environment=environment, metric=metric)
                session.add(row)
            row.until, row.silenced_by, row.silenced_at = until, silenced_by, now
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
    def alert_silences(self) -> list[AlertSilence]:
        with self._session() as session:
            return [_alert_silence(row) for row in session.scalars(select(AlertSilenceRecord))]

    @_guarded
    def end_alert_silence(self, environment: str, metric: str, until: datetime) -> bool:
        """Lift the silence that was set until `until`; False if it was replaced or lifted."""
        with self._session() as session, session.begin():
            row = session.get(AlertSilenceRecord, (environment, metric))
            if row is None or _as_utc(row.until) != until:
                return False
            session.delete(row)
            return True

    # --- incidents ---------------------------------------------------------------------------

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
    ) -> tuple[Incident, bool]:
        """Open an incident with its first event and timers, in one transaction.

        `timers` gets the new incident's id. With a `dedupe_key` that an unresolved incident
        already has, nothing is written and that incident comes back with False.
        """
        with self._session() as session, session.begin():
            if dedupe_key is not None:
                existing = session.scalars(
                    select(IncidentRecord)
                    .where(
                        IncidentRecord.dedupe_key == dedupe_key,
                        IncidentRecord.status != "resolved",
                    )
                    .order_by(IncidentRecord.id)
                    .limit(1)
                ).first()
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
            return _incident(record), True

    @_guarded
    def change_incident(
        self,
        incident_id: int,
        expected_seq: int,
        values: Mapping[str, object],
        event: NewEvent,
        timers: Sequence[NewTimer] = (),
        cancel: Sequence[tuple[str, str]] = (),
    ) -> Incident | None:
        """Apply a state change if the incident is still at expected_seq; None if it moved on.

        The change, its timeline event, its timers (set and cancelled) are one transaction:
        a crash leaves either all of them or none.
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

    # --- deployments and environment locks -------------------------------------------------

    @_guarded
    def begin_deployment(
        self,
        *,
        kind: str,
        environment: str,
        requested_by: str,
        version: str | None,
        options: dict[str, object],
        owner: str,
        approved_by: str | None = None,
        channel: str | None = None,
    ) -> Deployment | LockHeld:
        """Lock the environment and record a running deployment, both or neither.

        Of two concurrent calls for one environment exactly one gets the Deployment; the other
        gets LockHeld naming who holds the environment.
        """
        for _ in range(3):
            now = self.clock()
            try:
                with self._session() as session, session.begin():
                    record = DeploymentRecord(
                        kind=kind,
                        environment=environment,
                        version=version,
                        options=json.dumps(options),
                        requested_by=requested_by,
                        approved_by=approved_by,
                        state=RUNNING,
                        step="lock",
                        channel=channel,
                        owner=owner,
                        heartbeat_at=now,
                        started_at=now,
                    )
                    session.add(record)
                    session.flush()
                    session.add(
                        EnvironmentLockRecord(
                            environment=environment,
                            token=uuid.uuid4().hex,
                            kind=kind,
                            holder=requested_by,
                            deployment_id=record.id,
                            acquired_at=now,
                            channel=channel,
                        )
                    )
                    session.flush()
                    return _deployment(record)
            except IntegrityError:
                held = self.environment_lock(environment)
                if held is not None:
                    return LockHeld(held)
                # Released between our INSERT and the read: try again.
        raise StoreError(f"begin_deployment: the lock of {environment} kept changing hands")

    @_guarded
    def acquire_manual_lock(
        self, environment: str, holder: str, reason: str, channel: str | None
    ) -> EnvironmentLock | LockHeld:
        """/deploy lock: hold an environment by hand (no deployment attached)."""
        for _ in range(3):
            try:
                with self._session() as session, session.begin():
                    record = EnvironmentLockRecord(
                        environment=environment,
                        token=uuid.uuid4().hex,
                        kind="manual",
                        holder=holder,
                        reason=reason,
                        acquired_at=self.clock(),
                        channel=channel,
                    )
                    session.add(record)
                    session.flush()
                    return _lock(record)
            except IntegrityError:
                held = self.environment_lock(environment)
                if held is not None:
                    return LockHeld(held)
        raise StoreError(f"acquire_manual_lock: the lock of {environment} kept changing hands")

    @_guarded
    def release_lock(self, environment: str, token: str) -> bool:
        """Free the lock if it is still the one with this token; False if it was not."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(EnvironmentLockRecord).where(
                    EnvironmentLockRecord.environment == environment,
                    EnvironmentLockRecord.token == token,
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def environment_lock(self, environment: str) -> EnvironmentLock | None:
        with self._session() as session:
            record = session.get(EnvironmentLockRecord, environment)
            return _lock(record) if record is not None else None

    @_guarded
    def environment_locks(self) -> list[EnvironmentLock]:
        with self._session() as session:
            rows = session.scalars(
                select(EnvironmentLockRecord).order_by(EnvironmentLockRecord.environment)
            ).all()
        return [_lock(row) for row in rows]

    @_guarded
    def set_deployment_message(
        self, deployment_id: int, channel: str, message_ts: str, permalink: str | None
    ) -> None:
        """Where the deployment's progress shows; its lock links there too."""
        with self._session() as session, session.begin():
            session.execute(
                update(DeploymentRecord)
                .where(DeploymentRecord.id == deployment_id)
                .values(channel=channel, message_ts=message_ts, permalink=permalink)
            )
            session.execute(
                update(EnvironmentLockRecord)
                .where(EnvironmentLockRecord.deployment_id == deployment_id)
                .values(channel=channel, permalink=permalink)
            )

    @_guarded
    def update_deployment(self, deployment_id: int, **values: object) -> None:
        """Set fields of a running deployment: step, version, hosts, heartbeat_at."""
        allowed = {"step", "version", "hosts", "heartbeat_at", "summary"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"update_deployment cannot set {sorted(unknown)}")
        if "hosts" in values:
            values["hosts"] = json.dumps(values["hosts"])
        with self._session() as session, session.begin():
            session.execute(
                update(DeploymentRecord).where(DeploymentRecord.id == deployment_id).values(values)
            )

    @_guarded
    def finish_deployment(self, deployment_id: int, state: str, summary: str) -> bool:
        """End a running deployment and free its lock, together; False if it had already ended.

        Conditional on 'running', so a deployment marked interrupted by a sweep (its bot
        looked dead) is not overwritten by a late finish, and vice versa.
        """
        if state not in FINISHED_STATES:
            raise ValueError(f"{state!r} is not a finished state")
        with self._session() as session, session.begin():
            ended = session.execute(
                update(DeploymentRecord)
                .where(DeploymentRecord.id == deployment_id, DeploymentRecord.state == RUNNING)
                .values(state=state, summary=summary[:MAX_AUDIT_TEXT], finished_at=self.clock())
            )
            if ended.rowcount != 1:  # type: ignore[attr-defined]
                return False
            session.execute(
                delete(EnvironmentLockRecord).where(
                    EnvironmentLockRecord.deployment_id == deployment_id
                )
            )
            return True

    @_guarded
    def request_cancel(self, deployment_id: int, user_id: str) -> bool:
        """Ask a running deployment to stop before its next step; False if it is not running."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(DeploymentRecord)
                .where(
                    DeploymentRecord.id == deployment_id,
                    DeploymentRecord.state == RUNNING,
                    DeploymentRecord.cancel_requested_by.is_(None),
                )
                .values(cancel_requested_by=user_id)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def deployment(self, deployment_id: int) -> Deployment | None:
        with self._session() as session:
            record = session.get(DeploymentRecord, deployment_id)
            return _deployment(record) if record is not None else None

    @_guarded
    def deployments(
        self,
        environment: str | None = None,
        *,
        state: str | None = None,
        kind: str | None = None,
        limit: int = 10,
    ) -> list[Deployment]:
        """Newest first."""
        with self._session() as session:
            query = select(DeploymentRecord)
            if environment is not None:
                query = query.where(DeploymentRecord.environment == environment)
            if state is not None:
                query = query.where(DeploymentRecord.state == state)
            if kind is not None:
                query = query.where(DeploymentRecord.kind == kind)
            rows = session.scalars(query.order_by(DeploymentRecord.id.desc()).limit(limit)).all()
        return [_deployment(row) for row in rows]

    @_guarded
    def record_step(
        self, deployment_id: int, step: str, host: str, state: str, detail: str = ""
    ) -> int:
        with self._session() as session, session.begin():
            record = DeploymentStepRecord(
                deployment_id=deployment_id,
                step=step,
                host=host,
                state=state,
                detail=detail[:MAX_AUDIT_TEXT],
                started_at=self.clock(),
            )
            session.add(record)
            session.flush()
            return record.id

    @_guarded
    def finish_step(self, step_id: int, state: str, detail: str, output: str = "") -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(DeploymentStepRecord)
                .where(DeploymentStepRecord.id == step_id)
                .values(
                    state=state,
                    detail=detail[:MAX_AUDIT_TEXT],
                    output=output[-MAX_STEP_OUTPUT:],
                    finished_at=self.clock(),
                )
            )

    @_guarded
    def deployment_steps(self, deployment_id: int) -> list[DeploymentStep]:
        with self._session() as session:
            rows = session.scalars(
                select(DeploymentStepRecord)
                .where(DeploymentStepRecord.deployment_id == deployment_id)
                .order_by(DeploymentStepRecord.id)
            ).all()
        return [_step(row) for row in rows]

    @_guarded
    def interrupt_deployment(self, deployment_id: int, summary: str) -> Deployment | None:
        """Mark a running deployment whose bot died as interrupted and free its lock.

        Returns the deployment if this call did it (exactly one caller does), else None.
        """
        if not self.finish_deployment(deployment_id, "interrupted", summary):
            return None
        return self.deployment(deployment_id)

    # --- approvals -----------------------------------------------------------------------

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
    def approval(self, approval_id: int) -> Approval | None:
        with self._session() as session:
            record = session.get(ApprovalRecord, approval_id)
            return _approval(record) if record is not None else None


def _waiting(kind: str, key: str, now: datetime) -> ColumnElement[bool]:
    """(kind, key)'s timers that have not started: a running one (claimed, lease alive) is
    left to finish and be marked fired by its handler."""
    return and_(
        TimerRecord.kind == kind,
        TimerRecord.key == key,
        TimerRecord.fired_at.is_(None),
        or_(TimerRecord.claimed_until.is_(None), TimerRecord.claimed_until < now),
    )


def _set_timer(session: Session, timer: NewTimer, now: datetime) -> int:
    """Replace (kind, key)'s waiting timer inside the caller's transaction."""
    session.execute(delete(TimerRecord).where(_waiting(timer.kind, timer.key, now)))
    record = TimerRecord(
        kind=timer.kind, key=timer.key, payload=json.dumps(timer.payload), due_at=timer.due_at
    )
    session.add(record)
    session.flush()
    return record.id


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
    )


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


def _timer(row: TimerRecord) -> Timer:
    return Timer(
        id=row.id,
        kind=row.kind,
        key=row.key,
        payload=json.loads(row.payload or "{}"),
        due_at=_as_utc(row.due_at),  # type: ignore[arg-type]
        attempts=row.attempts,
    )


def _deployment(row: DeploymentRecord) -> Deployment:
    return Deployment(
        id=row.id,
        kind=row.kind,
        environment=row.environment,
        version=row.version,
        options=json.loads(row.options or "{}"),
        requested_by=row.requested_by,
        approved_by=row.approved_by,
        state=row.state,
        step=row.step,
        summary=row.summary,
        hosts=json.loads(row.hosts or "{}"),
        channel=row.channel,
        message_ts=row.message_ts,
        permalink=row.permalink,
        owner=row.owner,
        heartbeat_at=_as_utc(row.heartbeat_at),  # type: ignore[arg-type]
        cancel_requested_by=row.cancel_requested_by,
        started_at=_as_utc(row.started_at),  # type: ignore[arg-type]
        finished_at=_as_utc(row.finished_at),
    )


def _step(row: DeploymentStepRecord) -> DeploymentStep:
    return DeploymentStep(
        id=row.id,
        deployment_id=row.deployment_id,
        step=row.step,
        host=row.host,
        state=row.state,
        detail=row.detail,
        output=row.output,
        started_at=_as_utc(row.started_at),  # type: ignore[arg-type]
        finished_at=_as_utc(row.finished_at),
    )


def _lock(row: EnvironmentLockRecord) -> EnvironmentLock:
    return EnvironmentLock(
        environment=row.environment,
        token=row.token,
        kind=row.kind,
        holder=row.holder,
        reason=row.reason,
        deployment_id=row.deployment_id,
        acquired_at=_as_utc(row.acquired_at),  # type: ignore[arg-type]
        channel=row.channel,
        permalink=row.permalink,
    )


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
    )
