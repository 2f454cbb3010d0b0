"""The App Home's viewers, and what the Home reads of other concerns' rows in one go.

A viewer is someone who opened the bot's Home tab: while their last open is recent, every
change to what the Home shows is counted on their row (`unseen_changes`), and their Home is
published again — at most once per interval, which one conditional UPDATE (`claim_publish`)
enforces across every replica on the database. The row also keeps a digest of the view last
published, so a change that leaves a viewer's Home as it was costs no Slack call.

In the store, not in memory: the open lands on one replica, a change on another, and a
restart must not forget who is looking. Rows whose last open is older than the caller's
window are pruned (`forget_before`).

Like OnCallStore, built on a Store's engine (the table is made by migration 0005).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, String, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from bot.store.approvals import Approval, ApprovalRecord, _approval
from bot.store.base import Base, StoreCore, StoreError, _as_utc, _guarded
from bot.store.health import HealthCheckRecord, HealthStreakRecord


class HomeViewerRecord(Base):
    """Someone who opened the Home tab: when, and what was last published to it."""

    __tablename__ = "home_viewers"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    view_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Changes to what the Home shows since it was last published (or found unchanged).
    unseen_changes: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class HomeViewer:
    user_id: str
    opened_at: datetime
    published_at: datetime | None
    view_digest: str | None
    unseen_changes: int


@dataclass(frozen=True)
class EnvironmentHealth:
    """An environment's latest health class, and the latest version a check read."""

    health: str
    version: str | None


class HomeStore:
    """The store's App Home methods, on a Store's engine and clock."""

    def __init__(self, core: StoreCore) -> None:
        self.clock = core.clock
        self.engine = core.engine
        self._sessions = sessionmaker(core.engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    # --- viewers ----------------------------------------------------------------------------

    @_guarded
    def viewer(self, user_id: str) -> HomeViewer | None:
        with self._session() as session:
            row = session.get(HomeViewerRecord, user_id)
            return _viewer(row) if row is not None else None

    @_guarded
    def opened(self, user_id: str, at: datetime) -> HomeViewer:
        """Record an open of the Home tab; returns the viewer as it was before it."""
        for _ in range(3):
            with self._session() as session, session.begin():
                row = session.get(HomeViewerRecord, user_id)
                if row is not None:
                    before = _viewer(row)
                    row.opened_at = _utc(at)
                    return before
            try:
                with self._session() as session, session.begin():
                    row = HomeViewerRecord(user_id=user_id, opened_at=_utc(at), unseen_changes=0)
                    session.add(row)
                    session.flush()
                    return _viewer(row)
            except IntegrityError:
                continue  # the same person's open, on another replica, inserted first
        raise StoreError(f"opened: the Home viewer row of {user_id} kept changing")

    @_guarded
    def viewer_count(self, since: datetime) -> int:
        with self._session() as session:
            query = select(func.count()).where(HomeViewerRecord.opened_at >= _utc(since))
            return int(session.scalar(query) or 0)

    @_guarded
    def mark_changed(self, since: datetime) -> int:
        """Count a change for every viewer who opened the Home since `since`; returns how
        many were."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(HomeViewerRecord)
                .where(HomeViewerRecord.opened_at >= _utc(since))
                .values(unseen_changes=HomeViewerRecord.unseen_changes + 1)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @_guarded
    def waiting(self, since: datetime) -> list[HomeViewer]:
        """Viewers (opened since `since`) with changes their Home does not show yet."""
        with self._session() as session:
            rows = session.scalars(
                select(HomeViewerRecord)
                .where(
                    HomeViewerRecord.opened_at >= _utc(since),
                    HomeViewerRecord.unseen_changes > 0,
                )
                .order_by(HomeViewerRecord.opened_at.desc())
            ).all()
            return [_viewer(row) for row in rows]

    @_guarded
    def claim_publish(
        self, viewer: HomeViewer, digest: str, now: datetime, interval: timedelta
    ) -> bool:
        """Take the viewer's next publish: True for the one caller (of any replica) that may
        publish `digest` now, none having published within `interval`. The changes seen when
        the view was drawn are counted as shown."""
        not_lately = or_(
            HomeViewerRecord.published_at.is_(None),
            HomeViewerRecord.published_at <= _utc(now - interval),
        )
        with self._session() as session, session.begin():
            result = session.execute(
                update(HomeViewerRecord)
                .where(HomeViewerRecord.user_id == viewer.user_id, not_lately)
                .values(
                    published_at=_utc(now),
                    view_digest=digest,
                    unseen_changes=_minus(viewer.unseen_changes),
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @_guarded
    def published(self, viewer: HomeViewer, digest: str, at: datetime) -> None:
        """A view published outside the claims (on an open): recorded as the viewer's."""
        with self._session() as session, session.begin():
            session.execute(
                update(HomeViewerRecord)
                .where(HomeViewerRecord.user_id == viewer.user_id)
                .values(
                    published_at=_utc(at),
                    view_digest=digest,
                    unseen_changes=_minus(viewer.unseen_changes),
                )
            )

    @_guarded
    def unchanged(self, viewers: Sequence[HomeViewer]) -> None:
        """These viewers' Homes came out as already published: their changes are seen."""
        by_count: dict[int, list[str]] = defaultdict(list)
        for viewer in viewers:
            by_count[viewer.unseen_changes].append(viewer.user_id)
        with self._session() as session, session.begin():
            for seen, users in by_count.items():
                session.execute(
                    update(HomeViewerRecord)
                    .where(HomeViewerRecord.user_id.in_(users))
                    .values(unseen_changes=_minus(seen))
                )

    @_guarded
    def not_published(self, user_id: str) -> None:
        """A claimed publish that Slack refused: the viewer waits for it again."""
        with self._session() as session, session.begin():
            session.execute(
                update(HomeViewerRecord)
                .where(HomeViewerRecord.user_id == user_id)
                .values(view_digest=None, unseen_changes=HomeViewerRecord.unseen_changes + 1)
            )

    @_guarded
    def forget_before(self, before: datetime) -> int:
        """Drop the viewers whose last open is older than `before`; returns how many."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(HomeViewerRecord).where(HomeViewerRecord.opened_at < _utc(before))
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # --- what the Home reads of other concerns ----------------------------------------------

    @_guarded
    def environment_health(self) -> dict[str, EnvironmentHealth]:
        """Each checked environment's latest class (its streak row) and the latest version a
        check of it read (a failed check reads none). One query, one row per environment."""
        latest_version = (
            select(HealthCheckRecord.version)
            .where(
                HealthCheckRecord.environment == HealthStreakRecord.environment,
                HealthCheckRecord.version.is_not(None),
            )
            .order_by(HealthCheckRecord.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        with self._session() as session:
            rows = session.execute(
                select(HealthStreakRecord.environment, HealthStreakRecord.health, latest_version)
            ).all()
        return {env: EnvironmentHealth(health, version) for env, health, version in rows}

    @_guarded
    def pending_approvals(self) -> list[Approval]:
        """Requests still waiting for a decision (not past their expiry), oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(ApprovalRecord)
                .where(ApprovalRecord.state == "pending", ApprovalRecord.expires_at > self.clock())
                .order_by(ApprovalRecord.id)
            ).all()
            return [_approval(row) for row in rows]


def _minus(seen: int) -> object:
    """unseen_changes less the `seen` ones a view drew on (changes counted since stay)."""
    return case(
        (HomeViewerRecord.unseen_changes > seen, HomeViewerRecord.unseen_changes - seen),
        else_=0,
    )


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no offset: every time stored is UTC, so they compare as written.
    return moment.astimezone(UTC)


def _viewer(row: HomeViewerRecord) -> HomeViewer:
    return HomeViewer(
        user_id=row.user_id,
        opened_at=_as_utc(row.opened_at),  # type: ignore[arg-type]
        published_at=_as_utc(row.published_at),
        view_digest=row.view_digest,
        unseen_changes=row.unseen_changes or 0,
    )
