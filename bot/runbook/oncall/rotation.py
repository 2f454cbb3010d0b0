"""A rotation: members taking turns at an escalation level, as pure time arithmetic.

The rules (README "Rotations and overrides"):

- `handoff` is one hand-off: the instant `members[0]`'s turn begins. Turn `k` begins at the
  k-th hand-off after it (k < 0: before it), and belongs to `members[k mod len(members)]` —
  so before the configured hand-off the rotation runs backwards (the last member has the
  turn just before it).
- `every` is a whole number of days. Without a zone, hand-offs are `handoff + k * every`:
  a fixed offset, so across a daylight-saving change they move by an hour on the clocks of
  a zone that has one. With `zone`, hand-offs are at the same wall-clock time in that zone,
  `every` calendar days apart (09:00 stays 09:00; that turn lasts 23 h or 25 h). A wall time
  that does not exist that day (the hour the clocks skip) is read with the offset before
  the change, which lands that much later (02:30 → 03:30 CEST); one that happens twice (the
  hour that repeats) is its first occurrence. That is zoneinfo's reading (fold=0).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from bot.config import RotationSettings


@dataclass(frozen=True)
class Rotation:
    members: tuple[str, ...]
    every: timedelta  # a whole number of days (the config checks)
    handoff: datetime  # timezone-aware
    zone: str | None = None  # an IANA zone name: hand-offs keep its wall-clock time

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a rotation needs members")
        if self.every <= timedelta(0) or self.every % timedelta(days=1):
            raise ValueError(f"every must be a whole number of days, not {self.every}")
        if self.handoff.tzinfo is None:
            raise ValueError("the hand-off time needs a time zone")

    @property
    def tz(self) -> tzinfo:
        """Where its times are read and shown: the zone, else the hand-off's own offset."""
        if self.zone is not None:
            return ZoneInfo(self.zone)
        assert self.handoff.tzinfo is not None
        return self.handoff.tzinfo

    def handoff_at(self, turn: int) -> datetime:
        """When turn `turn` begins (0: the configured hand-off), in UTC."""
        if self.zone is None:
            return (self.handoff + turn * self.every).astimezone(UTC)
        zone = ZoneInfo(self.zone)
        wall = self.handoff.astimezone(zone).replace(tzinfo=None) + turn * self.every
        return wall.replace(tzinfo=zone).astimezone(UTC)

    def turn_at(self, at: datetime) -> int:
        """The turn under way at `at` (the one whose hand-off is the last at or before it)."""
        # Elapsed time over `every` is right but for a daylight-saving shift of an hour or
        # two near a hand-off, which one step either way corrects.
        turn = (at - self.handoff) // self.every
        while self.handoff_at(turn) > at:
            turn -= 1
        while self.handoff_at(turn + 1) <= at:
            turn += 1
        return turn

    def member(self, turn: int) -> str:
        return self.members[turn % len(self.members)]

    def member_at(self, at: datetime) -> str:
        return self.member(self.turn_at(at))

    def next_handoff(self, after: datetime) -> datetime:
        """The first hand-off strictly after `after`."""
        return self.handoff_at(self.turn_at(after) + 1)

    def is_handoff(self, at: datetime) -> bool:
        return self.handoff_at(self.turn_at(at)) == at

    def turns(self, start: datetime, end: datetime) -> list[tuple[int, datetime]]:
        """(turn, its hand-off) for every hand-off in (start, end]."""
        found = []
        turn = self.turn_at(start) + 1
        while (begins := self.handoff_at(turn)) <= end:
            found.append((turn, begins))
            turn += 1
        return found

    def members_between(self, start: datetime, end: datetime) -> set[str]:
        """Whoever had a turn at some time in [start, end]."""
        return {self.member_at(start)} | {self.member(turn) for turn, _ in self.turns(start, end)}

    @classmethod
    def from_config(cls, settings: RotationSettings) -> Rotation:
        return cls(
            tuple(settings.members), settings.every, settings.handoff_time, settings.handoff_zone
        )

    # --- the frozen plan's form ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "every_days": self.every.days,
            "handoff": self.handoff.isoformat(),
            "zone": self.zone,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rotation:
        return cls(
            members=tuple(str(m) for m in data["members"]),
            every=timedelta(days=int(data["every_days"])),
            handoff=datetime.fromisoformat(str(data["handoff"])),
            zone=None if data.get("zone") is None else str(data["zone"]),
        )
