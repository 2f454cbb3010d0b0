"""The outbox: every message the bot sends to Slack, as a row before it is a message.

A row is written first — a page in the same transaction as the escalation step that needs it,
anything else just before it is sent — and delivered from there (bot/slack/outbox.py), so a
message Slack could not take is still here when Slack answers again, and a message Slack took
is recorded with its ts. Each row has a `key` of its own, unique, which also travels with the
message (Slack message metadata): after an answer that was lost, the sender looks for the key
in the conversation before sending again.

Claims: one sender at a time holds a row (`claimed_by` until `claimed_until`, renewed while
it works on it). A row whose claim ran out while it was held may have reached Slack: the next
claimer marks it `in_doubt` and looks before it sends.

Posting leases (`posting_leases`): the right to post about one subject (an alert) for a short
while, renewed while the work runs — so two replicas never work on the same alert's messages at
once, and a killed holder delays nothing for long.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import MAX_AUDIT_TEXT, Base, StoreCore, _as_utc, _guarded

# Lanes, in the order they go: pages (and everything about an incident), routine posts (alerts),
# and replies to commands (which keep no pace of their own beyond Slack's Retry-After).
LANE_PAGE, LANE_ROUTINE, LANE_REPLY = 0, 1, 2
# What a row does: post a message (in `channel`, or in `user_id`'s DM when channel is None),
# update one (`channel` + `ts`), answer through a `response_url`, or share a file in `channel`
# (its bytes are `text`, UTF-8; its name and title in `payload`).
POST, UPDATE, RESPOND, UPLOAD = "post", "update", "respond", "upload"
# Where a row stands. Only WAITING rows are ever sent.
WAITING, SENT, REFUSED, EXPIRED, DROPPED = "waiting", "sent", "refused", "expired", "dropped"
FINISHED = frozenset({SENT, REFUSED, EXPIRED, DROPPED})


class OutboxRecord(Base):
    """One message to deliver, and what became of it (see the module's docstring)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_next_try", "state", "next_try_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    lane: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    thread_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    thread_of: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    blocks: Mapped[str | None] = mapped_column(Text, nullable=True)
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    payload: Mapped[str] = mapped_column(Text, default="{}")
    about: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=WAITING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sent_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PostingLeaseRecord(Base):
    """Who may post about a subject (an alert) until when: one replica at a time."""

    __tablename__ = "posting_leases"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class NewDelivery:
    """A message to write to the outbox. `text` None: rendered when it is delivered (a page
    written by the escalation, which knows no Slack markup); `due_at` None: due now."""

    key: str
    kind: str
    lane: int = LANE_ROUTINE
    op: str = POST
    channel: str | None = None
    user_id: str | None = None
    response_url: str | None = None
    thread_ts: str | None = None
    thread_of: str | None = None
    ts: str | None = None
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None
    subject: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    due_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """An outbox row as it is now."""

    id: int
    key: str
    kind: str
    lane: int
    op: str
    channel: str | None
    user_id: str | None
    response_url: str | None
    thread_ts: str | None
    thread_of: str | None
    ts: str | None
    text: str | None
    blocks: list[dict[str, Any]] | None
    subject: str | None
    payload: dict[str, Any]
    about: str
    due_at: datetime
    created_at: datetime
    expires_at: datetime | None
    state: str
    attempts: int
    next_try_at: datetime
    in_doubt: bool
    claimed_by: str | None
    claimed_until: datetime | None
    last_error: str | None
    sent_channel: str | None
    sent_ts: str | None
    finished_at: datetime | None

    @property
    def destination(self) -> str:
        """What its order is kept within: a conversation (a user's DM before it is opened),
        the message an update edits, the response_url."""
        if self.op == UPDATE:
            return f"{self.channel}/{self.ts}"
        if self.op == RESPOND:
            return f"response:{self.response_url}"
        return self.channel or f"@{self.user_id}"


def _free(now: datetime) -> Any:
    """Not held by a live claim."""
    return or_(OutboxRecord.claimed_by.is_(None), OutboxRecord.claimed_until < now)


def _record(new: NewDelivery, now: datetime) -> OutboxRecord:
    return OutboxRecord(
        key=new.key,
        kind=new.kind,
        lane=new.lane,
        op=new.op,
        channel=new.channel,
        user_id=new.user_id,
        response_url=new.response_url,
        thread_ts=new.thread_ts,
        thread_of=new.thread_of,
        ts=new.ts,
        text=new.text,
        blocks=None if new.blocks is None else json.dumps(new.blocks),
        subject=new.subject,
        payload=json.dumps(new.payload),
        about=new.about[:MAX_AUDIT_TEXT],
        due_at=new.due_at or now,
        created_at=now,
        expires_at=new.expires_at,
        state=WAITING,
        attempts=0,
        next_try_at=now,
        in_doubt=False,
    )


def _enqueue(session: Session, new: NewDelivery, now: datetime) -> None:
    """Write a delivery inside the caller's transaction, unless its key is written already."""
    exists = session.scalar(select(OutboxRecord.id).where(OutboxRecord.key == new.key))
    if exists is None:
        session.add(_record(new, now))
        session.flush()


class OutboxStore(StoreCore):
    """Store's outbox methods: write, claim, finish or retry deliveries; posting leases."""

    @_guarded
    def enqueue_delivery(
        self, new: NewDelivery, *, claim_for: str | None = None, lease: timedelta | None = None
    ) -> Delivery:
        """Write a delivery (claimed for `claim_for` if given) and return it.

        Its key written already: that row comes back — with this content if it is still
        waiting and nobody holds it (a card or an update shows the latest state when it goes
        at last), claimed for `claim_for` if free. An update supersedes the waiting updates of
        the same message that nobody holds: only the newest content is worth sending.
        """
        now = self.clock()
        until = now + (lease or timedelta(0))
        with self._session() as session:
            try:
                with session.begin():
                    record = _record(new, now)
                    if claim_for is not None:
                        record.claimed_by, record.claimed_until = claim_for, until
                        record.attempts = 1
                    session.add(record)
                    session.flush()
                    if new.op == UPDATE:
                        self._supersede(session, record, now)
                    return _delivery(record)
            except IntegrityError:
                pass
            with session.begin():
                record = session.scalars(
                    select(OutboxRecord).where(OutboxRecord.key == new.key)
                ).one()
                free = record.state == WAITING and (
                    record.claimed_by is None or _as_utc(record.claimed_until) < now  # type: ignore[operator]
                )
                if free and new.text is not None:
                    record.text = new.text
                    record.blocks = None if new.blocks is None else json.dumps(new.blocks)
                if free and claim_for is not None:
                    self._claim(record, claim_for, until)
                return _delivery(record)

    @staticmethod
    def _supersede(session: Session, record: OutboxRecord, now: datetime) -> None:
        session.execute(
            update(OutboxRecord)
            .where(
                OutboxRecord.op == UPDATE,
                OutboxRecord.channel == record.channel,
                OutboxRecord.ts == record.ts,
                OutboxRecord.id < record.id,
                OutboxRecord.state == WAITING,
                _free(now),
            )
            .values(state=DROPPED, last_error="superseded by a newer update", finished_at=now)
        )

    @staticmethod
    def _claim(record: OutboxRecord, owner: str, until: datetime) -> None:
        # Held by someone else whose claim ran out: that sender may have reached Slack.
        if record.claimed_by is not None and record.claimed_by != owner:
            record.in_doubt = True
        record.claimed_by, record.claimed_until = owner, until
        record.attempts += 1

    @_guarded
    def claim_delivery(self, delivery_id: int, owner: str, lease: timedelta) -> Delivery | None:
        """Hold a waiting delivery for a send (None: finished, or someone else holds it)."""
        now = self.clock()
        with self._session() as session, session.begin():
            result = session.execute(
                update(OutboxRecord)
                .where(
                    OutboxRecord.id == delivery_id,
                    OutboxRecord.state == WAITING,
                    _free(now),  # held by anyone, this owner too: one send at a time
                )
                .values(
                    in_doubt=case(
                        (
                            and_(
                                OutboxRecord.claimed_by.is_not(None),
                                OutboxRecord.claimed_by != owner,
                            ),
                            True,
                        ),
                        else_=OutboxRecord.in_doubt,
                    ),
                    claimed_by=owner,
                    claimed_until=now + lease,
                    attempts=OutboxRecord.attempts + 1,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            record = session.get(OutboxRecord, delivery_id)
            assert record is not None
            return _delivery(record)

    @_guarded
    def renew_delivery_claims(self, ids: Sequence[int], owner: str, lease: timedelta) -> None:
        if not ids:
            return
        with self._session() as session, session.begin():
            session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id.in_(list(ids)), OutboxRecord.claimed_by == owner)
                .values(claimed_until=self.clock() + lease)
            )

    @_guarded
    def finish_delivery(
        self,
        delivery_id: int,
        owner: str,
        state: str,
        *,
        channel: str | None = None,
        ts: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Record how a held delivery ended (sent: where; refused, expired, dropped: why)."""
        assert state in FINISHED
        now = self.clock()
        with self._session() as session, session.begin():
            result = session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id == delivery_id, OutboxRecord.claimed_by == owner)
                .values(
                    state=state,
                    sent_channel=channel,
                    sent_ts=ts,
                    last_error=error[:MAX_AUDIT_TEXT] if error else None,
                    in_doubt=False,
                    claimed_by=None,
                    claimed_until=None,
                    finished_at=now,
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def retry_delivery(
        self,
        delivery_id: int,
        owner: str,
        *,
        next_try_at: datetime,
        in_doubt: bool,
        error: str,
        as_dm: bool = False,
    ) -> None:
        """Give a held delivery back, to be tried again at next_try_at. `as_dm`: a reply
        whose response_url no longer works goes to the user's DM instead."""
        values: dict[str, object] = {
            "next_try_at": next_try_at,
            "in_doubt": in_doubt,
            "last_error": error[:MAX_AUDIT_TEXT],
            "claimed_by": None,
            "claimed_until": None,
        }
        if as_dm:
            values.update(op=POST, channel=None, response_url=None)
        with self._session() as session, session.begin():
            session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id == delivery_id, OutboxRecord.claimed_by == owner)
                .values(**values)
            )

    @_guarded
    def delivery(self, key: str) -> Delivery | None:
        with self._session() as session:
            record = session.scalars(select(OutboxRecord).where(OutboxRecord.key == key)).first()
            return _delivery(record) if record is not None else None

    @_guarded
    def deliveries_of(self, subject: str, kind: str | None = None) -> list[Delivery]:
        """A subject's deliveries (an incident's pages, say), oldest first."""
        with self._session() as session:
            query = select(OutboxRecord).where(OutboxRecord.subject == subject)
            if kind is not None:
                query = query.where(OutboxRecord.kind == kind)
            return [_delivery(r) for r in session.scalars(query.order_by(OutboxRecord.id))]

    @_guarded
    def waiting_deliveries(self, limit: int = 500) -> list[Delivery]:
        """Deliveries not finished, pages first, each lane oldest first (held ones too: the
        sender keeps order behind them)."""
        with self._session() as session:
            rows = session.scalars(
                select(OutboxRecord)
                .where(OutboxRecord.state == WAITING)
                .order_by(OutboxRecord.lane, OutboxRecord.id)
                .limit(limit)
            ).all()
            return [_delivery(r) for r in rows]

    @_guarded
    def expire_deliveries(self) -> list[Delivery]:
        """Finish, as expired, the waiting deliveries past their usefulness nobody holds."""
        now = self.clock()
        with self._session() as session, session.begin():
            rows = session.scalars(
                select(OutboxRecord).where(
                    OutboxRecord.state == WAITING,
                    OutboxRecord.expires_at.is_not(None),
                    OutboxRecord.expires_at < now,
                    _free(now),
                )
            ).all()
            for record in rows:
                record.state, record.finished_at = EXPIRED, now
                record.claimed_by = record.claimed_until = None
            return [_delivery(r) for r in rows]

    @_guarded
    def outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many deliveries wait, and since when the oldest has."""
        with self._session() as session:
            count, oldest = session.execute(
                select(func.count(OutboxRecord.id), func.min(OutboxRecord.created_at)).where(
                    OutboxRecord.state == WAITING
                )
            ).one()
            return int(count), _as_utc(oldest)

    @_guarded
    def prune_deliveries(self, finished_before: datetime) -> int:
        """Forget finished deliveries older than finished_before; returns how many."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(OutboxRecord).where(
                    OutboxRecord.state != WAITING, OutboxRecord.finished_at < finished_before
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # --- posting leases -------------------------------------------------------------------

    @_guarded
    def take_posting_lease(self, subject: str, owner: str, lease: timedelta) -> bool:
        """Hold (or renew) the right to post about subject until now + lease."""
        now = self.clock()
        with self._session() as session:
            with session.begin():
                result = session.execute(
                    update(PostingLeaseRecord)
                    .where(
                        PostingLeaseRecord.subject == subject,
                        or_(PostingLeaseRecord.owner == owner, PostingLeaseRecord.until < now),
                    )
                    .values(owner=owner, until=now + lease)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    return True
            try:
                with session.begin():
                    session.add(PostingLeaseRecord(subject=subject, owner=owner, until=now + lease))
            except IntegrityError:
                return False  # someone else holds it
            return True

    @_guarded
    def release_posting_lease(self, subject: str, owner: str) -> None:
        with self._session() as session, session.begin():
            session.execute(
                delete(PostingLeaseRecord).where(
                    PostingLeaseRecord.subject == subject, PostingLeaseRecord.owner == owner
                )
            )


def _delivery(record: OutboxRecord) -> Delivery:
    values = {f.name: getattr(record, f.name) for f in fields(Delivery)}
    values["payload"] = json.loads(record.payload or "{}")
    values["blocks"] = None if record.blocks is None else json.loads(record.blocks)
    for name in ("due_at", "created_at", "expires_at", "next_try_at", "claimed_until"):
        values[name] = _as_utc(values[name])
    values["finished_at"] = _as_utc(values["finished_at"])
    return Delivery(**values)
