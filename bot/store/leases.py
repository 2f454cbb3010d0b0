"""Leases: one holder at a time for work that must run in exactly one replica.

A lease is a row: its holder (bot/process.py's THIS_PROCESS), a fencing token that goes up
with every new holder, and when it runs out. The holder renews it well before then; a
holder that dies simply stops renewing, and the next to ask after it ran out gets it with
the next token. Work done under a lease writes with its `Fence`: the write's transaction
first checks (`hold`) that the lease is still this holder's, with this token — so a deposed
holder's late write is refused, not merged (a paused process, a network
that came back). A row rather than PostgreSQL's advisory locks: the same code on SQLite, and
the token that makes late writes refusable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Integer, String, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bot.store.base import Base, StoreCore, _as_utc, _guarded


class LeaseRecord(Base):
    """Who holds a named lease, under which token, until when."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Fence:
    """Proof of holding a lease: writes made with it are refused once it is lost."""

    name: str
    holder: str
    token: int


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at: datetime
    acquired_at: datetime


class LeaseLost(Exception):
    """A write under a lease this process no longer holds was refused; nothing was written."""


class LeaseStore(StoreCore):
    """Store's lease methods: acquire, renew, release, and the holder now."""

    @_guarded
    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> Fence | None:
        """The lease for holder until now + ttl, if it is free, run out or already holder's
        (then it is renewed under the same token); None while another holds it."""
        now = self.clock()
        renewing = (LeaseRecord.holder == holder) & (LeaseRecord.expires_at > now)
        try:
            with self._session() as session, session.begin():
                taken = session.execute(
                    update(LeaseRecord)
                    .where(
                        LeaseRecord.name == name,
                        (LeaseRecord.holder == holder) | (LeaseRecord.expires_at <= now),
                    )
                    .values(
                        holder=holder,
                        token=case((renewing, LeaseRecord.token), else_=LeaseRecord.token + 1),
                        acquired_at=case((renewing, LeaseRecord.acquired_at), else_=now),
                        expires_at=now + ttl,
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    token = session.scalar(
                        select(LeaseRecord.token).where(LeaseRecord.name == name)
                    )
                    assert token is not None
                    return Fence(name, holder, token)
                if session.get(LeaseRecord, name) is not None:
                    return None  # held by another, not run out
                session.add(
                    LeaseRecord(
                        name=name, holder=holder, token=1, expires_at=now + ttl, acquired_at=now
                    )
                )
            return Fence(name, holder, 1)
        except IntegrityError:
            return None  # another replica made the row first: it holds the lease

    @_guarded
    def renew_lease(self, fence: Fence, ttl: timedelta) -> bool:
        """Extend the lease to now + ttl; False if it has another holder or token now."""
        with self._session() as session, session.begin():
            renewed = session.execute(
                update(LeaseRecord).where(*_held_by(fence)).values(expires_at=self.clock() + ttl)
            )
            return renewed.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def release_lease(self, fence: Fence) -> None:
        """Give the lease up now (a clean stop): the next to ask gets it at once."""
        with self._session() as session, session.begin():
            session.execute(
                update(LeaseRecord).where(*_held_by(fence)).values(expires_at=self.clock())
            )

    @_guarded
    def lease(self, name: str) -> Lease | None:
        with self._session() as session:
            row = session.get(LeaseRecord, name)
            if row is None:
                return None
            return Lease(
                row.name,
                row.holder,
                row.token,
                _as_utc(row.expires_at),  # type: ignore[arg-type]
                _as_utc(row.acquired_at),  # type: ignore[arg-type]
            )


def _held_by(fence: Fence) -> tuple[object, ...]:
    return (
        LeaseRecord.name == fence.name,
        LeaseRecord.holder == fence.holder,
        LeaseRecord.token == fence.token,
    )


def hold(session: Session, fence: Fence) -> None:
    """Inside the caller's transaction: go on only while fence's lease is still this holder's,
    under this token; else LeaseLost (the caller's transaction is rolled back).

    The token, not the expiry: a lease that ran out but was taken by nobody (a renewal late
    on a busy machine) has no other writer, and a new holder always has a new token. An
    UPDATE, not a read: on PostgreSQL it locks the lease's row until the caller commits, so a
    new holder's acquire waits for this write, or this write sees the new token.
    """
    held = session.execute(
        update(LeaseRecord).where(*_held_by(fence)).values(token=LeaseRecord.token)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"the {fence.name} lease (token {fence.token}) is no longer held here")
