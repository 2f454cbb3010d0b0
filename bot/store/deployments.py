"""Deployments (/deploy, /rollback and backup runs), their steps, and environment locks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.approvals import ApprovalRecord
from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, StoreError, _as_utc, _guarded

# The tail of a failed step's output kept with it (the thread shows the last lines).
MAX_STEP_OUTPUT = 8000


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


# --- deployments and locks: what the store hands back ---------------------------

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
class AlreadyStarted:
    """The approved request this run would start has started already (its run key is taken)."""

    approval_id: int


@dataclass(frozen=True)
class LockHeld:
    """An environment could not be locked: this is who holds it."""

    lock: EnvironmentLock


class DeploymentStore(StoreCore):
    """Store's deployment methods: runs and their steps, environment locks."""

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
        approval_id: int | None = None,
    ) -> Deployment | LockHeld | AlreadyStarted:
        """Lock the environment and record a running deployment, both or neither.

        Of two concurrent calls for one environment exactly one gets the Deployment; the other
        gets LockHeld naming who holds the environment. A run of an approved request
        (`approval_id`) also takes the request's run key in the same transaction: a second
        start of it gets AlreadyStarted.
        """
        for _ in range(3):
            now = self.clock()
            try:
                with self._session() as session, session.begin():
                    if approval_id is not None and not _take_run_key(session, approval_id, now):
                        return AlreadyStarted(approval_id)
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
    def claim_deployment(self, deployment_id: int, owner_was: str, owner: str) -> bool:
        """Take over a running deployment whose owner is gone (to put its hosts right under
        its own lock before it is ended); False when another took it, or it ended."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(DeploymentRecord)
                .where(
                    DeploymentRecord.id == deployment_id,
                    DeploymentRecord.state == RUNNING,
                    DeploymentRecord.owner == owner_was,
                )
                .values(owner=owner, heartbeat_at=self.clock())
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

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
    def deployments_between(
        self, environment: str, since: datetime, until: datetime, limit: int = 50
    ) -> list[Deployment]:
        """The environment's deploys and rollbacks started in [since, until], oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(DeploymentRecord)
                .where(
                    DeploymentRecord.environment == environment,
                    DeploymentRecord.started_at >= since,
                    DeploymentRecord.started_at <= until,
                )
                .order_by(DeploymentRecord.id)
                .limit(limit)
            ).all()
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


def _take_run_key(session: Session, approval_id: int, now: datetime) -> bool:
    result = session.execute(
        update(ApprovalRecord)
        .where(ApprovalRecord.id == approval_id, ApprovalRecord.started_at.is_(None))
        .values(started_at=now)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
