"""Who is on call: one answer, `OnCall.on_call(level, at)`, for paging, /oncall and hand-offs.

A level's people at a time are its fixed `users` and whoever holds its rotation's turn then:
the rotation's member, or — while an override of that level is in effect — the override's
user (of overlapping overrides, the one made last). Only a level with a rotation can be
overridden: a level of fixed users has no turn to hand over.

Overrides start when they are made and end at a time (`for 8h`, `until …`, by default at
the level's next hand-off); cancelling one ends it at once. Who may make one: whoever is on
call for the level now, deployers and approvers (the Slack side says who those are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from bot.clock import Clock, utc_now
from bot.runbook.oncall.rotation import Rotation
from bot.store.oncall import OnCallStore, Override

MAX_OVERRIDE = timedelta(days=90)
SCHEDULE_SPAN = timedelta(weeks=4)  # what `/oncall <level>` shows


class Staffed(Protocol):
    """An escalation level as far as who is on call goes (the frozen plan's Level is one)."""

    @property
    def name(self) -> str: ...

    @property
    def users(self) -> tuple[str, ...]: ...

    @property
    def rotation(self) -> Rotation | None: ...


def turn_holder(level: Staffed, at: datetime, overrides: Sequence[Override]) -> str | None:
    """Who holds the level's rotation turn at `at` (None: the level has no rotation)."""
    if level.rotation is None:
        return None
    active = [o for o in overrides if o.level == level.name and o.active_at(at)]
    return active[-1].user_id if active else level.rotation.member_at(at)


def people_on_call(level: Staffed, at: datetime, overrides: Sequence[Override]) -> tuple[str, ...]:
    """The level's people at `at`: the turn's holder first, then its fixed users."""
    holder = turn_holder(level, at, overrides)
    return tuple(dict.fromkeys([*([holder] if holder else []), *level.users]))


def people_between(
    level: Staffed, start: datetime, end: datetime, overrides: Sequence[Override]
) -> set[str]:
    """Everyone among the level's people at some time in [start, end]: its fixed users, the
    rotation members whose turn it was, and whoever an override of it put on call then."""
    ours = [o for o in overrides if o.level == level.name and o.ends_at > start]
    ours = [o for o in ours if o.starts_at <= end]
    people = set(level.users) | {o.user_id for o in ours}
    return people | {s.user_id for s in shifts(level, start, end, ours) if s.override is None}


def zone_of(level: Staffed) -> tzinfo:
    """Where the level's times are read and shown: its rotation's zone or offset, else UTC."""
    return level.rotation.tz if level.rotation is not None else UTC


@dataclass(frozen=True)
class Shift:
    """A stretch of time one person holds a level's turn."""

    user_id: str
    starts_at: datetime
    ends_at: datetime | None  # None: still theirs at the end of the span asked about
    override: Override | None  # the override that put them there, if one did


def shifts(
    level: Staffed, start: datetime, end: datetime, overrides: Sequence[Override]
) -> list[Shift]:
    """The level's turns from `start` to `end`, overrides applied (empty: no rotation)."""
    if level.rotation is None:
        return []
    ours = [o for o in overrides if o.level == level.name]
    changes = {at for _, at in level.rotation.turns(start, end) if at < end}
    changes |= {t for o in ours for t in (o.starts_at, o.ends_at) if start < t < end}
    found: list[Shift] = []
    for begins in [start, *sorted(changes)]:
        user = turn_holder(level, begins, ours)
        assert user is not None
        override = next((o for o in reversed(ours) if o.active_at(begins)), None)
        if found and found[-1].user_id == user and found[-1].override == override:
            continue
        if found:
            last = found[-1]
            found[-1] = Shift(last.user_id, last.starts_at, begins, last.override)
        found.append(Shift(user, begins, None, override))
    return found


class OnCall:
    """Rotations from the levels, overrides from the store: who is on call, and changes."""

    def __init__(self, store: OnCallStore, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    async def on_call(self, level: Staffed, at: datetime) -> tuple[str, ...]:
        """The people a page of `level` sent at `at` goes to."""
        if level.rotation is None:
            return tuple(level.users)  # fixed: nothing to look up
        overrides = await asyncio.to_thread(
            self.store.overrides, level.name, ending_after=at, starting_by=at
        )
        return people_on_call(level, at, overrides)

    async def was_on_call(
        self, level: Staffed, user_id: str, start: datetime, end: datetime
    ) -> bool:
        """Whether `user_id` was among the level's people at some time in [start, end]."""
        if user_id in level.users:
            return True
        if level.rotation is None:
            return False
        overrides = await asyncio.to_thread(
            self.store.overrides, level.name, ending_after=start, starting_by=end
        )
        return user_id in people_between(level, start, end, overrides)

    async def shifts(self, level: Staffed, start: datetime, end: datetime) -> list[Shift]:
        overrides = await self.overrides_from(start, level)
        return shifts(level, start, end, overrides)

    async def overrides_from(self, at: datetime, level: Staffed | None = None) -> list[Override]:
        """Overrides in effect at `at` or later (of one level, or of all)."""
        name = level.name if level is not None else None
        return await asyncio.to_thread(self.store.overrides, name, ending_after=at)

    # --- overrides ------------------------------------------------------------------------

    async def may_override(self, level: Staffed, user_id: str, at: datetime) -> bool:
        """Whether `user_id` is on call for the level at `at` (roles are the caller's to add)."""
        return user_id in await self.on_call(level, at)

    async def override(
        self, level: Staffed, user_id: str, ends_at: datetime | None, *, by: str
    ) -> Override:
        """Put `user_id` on call for the level from now until `ends_at` (None: the level's
        next hand-off). Raises ValueError for a level without rotation, an end that is not
        in the future, or one more than MAX_OVERRIDE away."""
        if level.rotation is None:
            raise ValueError("the level has no rotation")
        now = self.clock()
        ends_at = ends_at or level.rotation.next_handoff(now)
        if ends_at <= now:
            raise ValueError("the end is not in the future")
        if ends_at - now > MAX_OVERRIDE:
            raise ValueError(f"an override lasts at most {MAX_OVERRIDE.days} days")
        return await asyncio.to_thread(
            self.store.add_override, level.name, user_id, now, ends_at, by
        )

    async def cancel(self, requester: str, *, whose: str | None = None) -> list[Override]:
        """End, now, the overrides in effect: without `whose`, those `requester` made or is
        on call by; with it, those that put `whose` on call (the caller checks the right)."""
        now = self.clock()
        current = await self.overrides_from(now)
        if whose is None:
            mine = [o for o in current if requester in (o.created_by, o.user_id)]
        else:
            mine = [o for o in current if o.user_id == whose]
        if not mine:
            return []
        return await asyncio.to_thread(
            self.store.end_overrides, [o.id for o in mine], requester, now
        )


def local_time(level: Staffed, written: datetime) -> datetime:
    """A time as typed: one without an offset is read in the level's zone (zone_of)."""
    if written.tzinfo is not None:
        return written
    return written.replace(tzinfo=zone_of(level))
