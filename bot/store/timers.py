"""Durable timers: what must happen at a time, even if the bot restarts before then.

Incidents and alerts set and cancel timers inside their own transactions with `_set_timer`
and `_waiting`; bot/scheduler.py claims and fires them. It sleeps until the next one can be
claimed (`next_timer_at`); on PostgreSQL every timer set or put back is announced on the
TIMER_CHANNEL (NOTIFY, sent at commit) so the other replicas wake for it too (`listen_timers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import Base, StoreCore, _as_utc, _guarded

log = logging.getLogger(__name__)

TIMER_CHANNEL = "eventmesh_timers"
# A lost LISTEN connection is opened again after this; the sweeps' safety poll covers the gap.
RELISTEN_AFTER_S = 5.0


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
class NewTimer:
    """A timer to set in the same transaction as the change that needs it."""

    kind: str
    key: str
    due_at: datetime
    payload: dict[str, object] = field(default_factory=dict)


class TimerStore(StoreCore):
    """Store's timer methods: set, cancel, claim (with a lease), fire or retry."""

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
    def next_timer_at(self) -> datetime | None:
        """When a waiting timer can next be claimed (None: none waits).

        A free timer at its due time; a claimed one when its claim runs out (its claimer may
        have died), so a sweep planned for then finds it if nobody finished it.
        """
        waiting = TimerRecord.fired_at.is_(None)
        with self._session() as session:
            free = session.scalar(
                select(func.min(TimerRecord.due_at)).where(
                    waiting, TimerRecord.claimed_until.is_(None)
                )
            )
            claimed = session.scalar(
                select(func.min(TimerRecord.claimed_until)).where(
                    waiting, TimerRecord.claimed_until.is_not(None)
                )
            )
        times = [_as_utc(when) for when in (free, claimed) if when is not None]
        return min(times) if times else None  # type: ignore[type-var]

    async def listen_timers(self, on_due: Callable[[datetime], None]) -> None:
        """Call on_due(due_at) for each timer set in this database by any replica, until
        cancelled. PostgreSQL only (LISTEN on its own connection); returns at once on SQLite,
        where the sweeps' safety poll is what finds another process's timers."""
        if self.engine.dialect.name != "postgresql":
            return
        import psycopg  # the PostgreSQL driver; only a PostgreSQL bot has it loaded

        args, params = self.engine.dialect.create_connect_args(self.engine.url)
        params = {key: value for key, value in params.items() if key != "context"}
        params.setdefault("connect_timeout", 5)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    *args, **params, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {TIMER_CHANNEL}")
                    on_due(self.clock())  # what was set while nobody listened
                    async for notice in connection.notifies():
                        due = _notified_due(notice.payload)
                        if due is not None:
                            on_due(due)
            except psycopg.Error as exc:
                log.warning(
                    "timers: not listening for other replicas' timers (%s); trying again in "
                    "%.0f s, sweeping on the safety poll meanwhile",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    RELISTEN_AFTER_S,
                )
            await asyncio.sleep(RELISTEN_AFTER_S)

    @_guarded
    def renew_timer(self, timer_id: int, owner: str, attempt: int, until: datetime) -> bool:
        """Extend owner's claim (the one of that attempt) to until; False if it is lost."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(TimerRecord)
                .where(*_claim(timer_id, owner, attempt), TimerRecord.fired_at.is_(None))
                .values(claimed_until=until)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def finish_timer(self, timer_id: int, owner: str, attempt: int | None = None) -> bool:
        """Mark a claimed timer fired; False if the claim was lost (another bot has it now).

        `attempt` is the claim's token (Timer.attempts when claimed): a claim of the same
        owner that ran out and was made again is another claim.
        """
        with self._session() as session, session.begin():
            result = session.execute(
                update(TimerRecord)
                .where(*_claim(timer_id, owner, attempt))
                .values(fired_at=self.clock(), claimed_until=None)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def retry_timer(
        self, timer_id: int, owner: str, due_at: datetime, attempt: int | None = None
    ) -> None:
        """Give a claimed timer back, due again at due_at (its handler failed)."""
        with self._session() as session, session.begin():
            session.execute(
                update(TimerRecord)
                .where(*_claim(timer_id, owner, attempt), TimerRecord.fired_at.is_(None))
                .values(due_at=due_at, claimed_by=None, claimed_until=None)
            )
            _announce(session, due_at)


def _claim(timer_id: int, owner: str, attempt: int | None) -> list[ColumnElement[bool]]:
    """The timer while owner's claim (of that attempt, when given) stands."""
    conditions = [TimerRecord.id == timer_id, TimerRecord.claimed_by == owner]
    if attempt is not None:
        conditions.append(TimerRecord.attempts == attempt)
    return conditions


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
    _announce(session, timer.due_at)
    return record.id


def _announce(session: Session, due_at: datetime) -> None:
    """Tell the other replicas' schedulers (PostgreSQL: NOTIFY, delivered at commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :due)"),
            {"channel": TIMER_CHANNEL, "due": due_at.isoformat()},
        )


def _notified_due(payload: str) -> datetime | None:
    try:
        return _as_utc(datetime.fromisoformat(payload))
    except ValueError:
        log.warning("timers: ignoring a notice with no due time (%r)", payload[:80])
        return None


def _timer(row: TimerRecord) -> Timer:
    return Timer(
        id=row.id,
        kind=row.kind,
        key=row.key,
        payload=json.loads(row.payload or "{}"),
        due_at=_as_utc(row.due_at),  # type: ignore[arg-type]
        attempts=row.attempts,
    )
