"""Rotations as time arithmetic, on a clock moved by hand: hand-offs at the configured wall-clock
time across Berlin's daylight-saving changes (late March, late October), `every` of 1d, 1w, 2w,
and who holds the turn with overrides applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.runbook.incidents.escalation import Level
from bot.runbook.oncall.oncall import people_on_call, shifts, turn_holder
from bot.runbook.oncall.rotation import Rotation
from bot.store.oncall import Override
from tests.support.clock import ManualClock

BERLIN = ZoneInfo("Europe/Berlin")
A, B, C = "U0ALICE", "U0BOB", "U0CAROL"


def berlin(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=BERLIN)  # type: ignore[misc]


def walk(rotation: Rotation, clock: ManualClock, until: datetime) -> list[tuple[datetime, str]]:
    """Move the clock a minute at a time and note every change of who holds the turn."""
    changes = [(clock(), rotation.member_at(clock()))]
    while clock() < until:
        clock.advance(minutes=1)
        member = rotation.member_at(clock())
        if member != changes[-1][1]:
            changes.append((clock(), member))
    return changes


def test_daily_hand_offs_stay_at_nine_in_berlin_across_the_march_change() -> None:
    # Clocks go forward on Sunday 28 March 2027, 02:00 CET → 03:00 CEST.
    rotation = Rotation((A, B, C), timedelta(days=1), berlin(2027, 3, 25, 9, 0), "Europe/Berlin")
    clock = ManualClock(berlin(2027, 3, 25, 8, 0).astimezone(UTC))
    changes = walk(rotation, clock, berlin(2027, 3, 31, 10, 0).astimezone(UTC))
    local = [(at.astimezone(BERLIN), who) for at, who in changes[1:]]
    assert [(at.day, at.hour, at.minute, who) for at, who in local] == [
        (25, 9, 0, A),
        (26, 9, 0, B),
        (27, 9, 0, C),
        (28, 9, 0, A),  # the first day of summer time: still 09:00 on the wall
        (29, 9, 0, B),
        (30, 9, 0, C),
        (31, 9, 0, A),
    ]
    assert changes[0][1] == C  # before the configured hand-off the rotation runs backwards
    in_utc = [at.hour for at, _ in changes[1:]]
    assert in_utc == [8, 8, 8, 7, 7, 7, 7]
    # The turn that spans the change lasts 23 hours.
    assert changes[4][0] - changes[3][0] == timedelta(hours=23)


def test_weekly_hand_offs_stay_at_nine_in_berlin_across_the_october_change() -> None:
    # Clocks go back on Sunday 25 October 2026, 03:00 CEST → 02:00 CET.
    rotation = Rotation(
        (A, B, C),
        timedelta(weeks=1),
        datetime.fromisoformat("2026-10-12T09:00:00+02:00"),
        "Europe/Berlin",
    )
    clock = ManualClock(datetime(2026, 10, 12, 6, 0, tzinfo=UTC))
    changes = walk(rotation, clock, datetime(2026, 11, 3, tzinfo=UTC))
    assert [(at.astimezone(BERLIN).strftime("%a %d %b %H:%M %Z"), who) for at, who in changes] == [
        ("Mon 12 Oct 08:00 CEST", C),
        ("Mon 12 Oct 09:00 CEST", A),
        ("Mon 19 Oct 09:00 CEST", B),
        ("Mon 26 Oct 09:00 CET", C),
        ("Mon 02 Nov 09:00 CET", A),
    ]
    assert changes[3][0] - changes[2][0] == timedelta(days=7, hours=1)


def test_fortnightly_hand_offs_across_both_changes_of_a_year() -> None:
    rotation = Rotation((A, B), timedelta(weeks=2), berlin(2027, 1, 4, 9, 0), "Europe/Berlin")
    handoffs = [rotation.handoff_at(turn) for turn in range(27)]  # a year of fortnights
    assert all(at.astimezone(BERLIN).hour == 9 for at in handoffs)
    assert {at.astimezone(BERLIN).weekday() for at in handoffs} == {0}  # Mondays
    assert {at.hour for at in handoffs} == {7, 8}  # 08:00Z in winter, 07:00Z in summer
    assert [rotation.member(turn) for turn in range(4)] == [A, B, A, B]
    assert rotation.member_at(berlin(2027, 1, 18, 8, 59)) == A
    assert rotation.member_at(berlin(2027, 1, 18, 9, 0)) == B


def test_without_a_zone_the_offset_is_fixed_and_the_wall_clock_moves() -> None:
    rotation = Rotation(
        (A, B), timedelta(days=1), datetime.fromisoformat("2027-03-26T09:00:00+01:00")
    )
    assert rotation.handoff_at(1).astimezone(BERLIN).hour == 9  # 27 March, still winter
    assert rotation.handoff_at(2).astimezone(BERLIN).hour == 10  # 28 March, summer time
    assert rotation.handoff_at(2) - rotation.handoff_at(1) == timedelta(days=1)


def test_a_hand_off_in_the_skipped_hour_lands_after_it_and_in_the_repeated_hour_first() -> None:
    spring = Rotation((A, B), timedelta(days=1), berlin(2027, 3, 27, 2, 30), "Europe/Berlin")
    # 02:30 does not exist on 28 March 2027: read with the winter offset, it is 03:30 CEST.
    assert spring.handoff_at(1) == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    assert spring.handoff_at(1).astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    assert spring.handoff_at(2).astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CEST"
    autumn = Rotation((A, B), timedelta(days=1), berlin(2026, 10, 24, 2, 30), "Europe/Berlin")
    # 02:30 happens twice on 25 October 2026: the first time, in summer time.
    assert autumn.handoff_at(1) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@given(
    members=st.integers(min_value=1, max_value=5),
    days=st.integers(min_value=1, max_value=21),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", None]),
    hour=st.integers(min_value=0, max_value=23),
    moment=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
def test_every_moment_falls_in_exactly_one_turn(
    members: int, days: int, zone: str | None, hour: int, moment: datetime
) -> None:
    start = datetime(2027, 6, 7, hour, 0, tzinfo=ZoneInfo(zone) if zone else UTC)
    rotation = Rotation(tuple(f"U{i}" for i in range(members)), timedelta(days=days), start, zone)
    turn = rotation.turn_at(moment)
    assert rotation.handoff_at(turn) <= moment < rotation.handoff_at(turn + 1)
    assert rotation.next_handoff(moment) == rotation.handoff_at(turn + 1)
    assert rotation.member_at(moment) == f"U{turn % members}"
    if zone is not None:
        # The wall-clock time is kept, but on a day the clocks skip it.
        tz = ZoneInfo(zone)
        local = rotation.handoff_at(turn).astimezone(tz)
        wall = datetime.combine(local.date(), start.time())
        exists = wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
        assert local.time() == start.time() or not exists


def test_the_frozen_plan_keeps_the_rotation_definition() -> None:
    rotation = Rotation((A, B), timedelta(weeks=2), berlin(2026, 12, 7, 9, 0), "Europe/Berlin")
    assert Rotation.from_json(rotation.to_json()) == rotation
    assert rotation.to_json()["members"] == [A, B]
    with pytest.raises(ValueError, match="whole number of days"):
        Rotation((A,), timedelta(hours=36), berlin(2026, 12, 7, 9, 0))
    with pytest.raises(ValueError, match="needs members"):
        Rotation((), timedelta(days=1), berlin(2026, 12, 7, 9, 0))


# --- who holds the turn, overrides applied ----------------------------------------------------

LEVEL = Level(
    "On-call DevOps Engineer",
    ("U0WATCHER",),
    timedelta(minutes=10),
    Rotation((A, B, C), timedelta(days=1), datetime(2026, 12, 7, 9, 0, tzinfo=UTC)),
)


def override(
    user: str, starts: datetime, ends: datetime, n: int = 1, level: str = LEVEL.name
) -> Override:
    return Override(n, level, user, starts, ends, A, starts, None, None)


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 12, day, hour, 0, tzinfo=UTC)


def test_an_override_takes_the_turn_while_it_lasts_and_the_last_made_wins() -> None:
    first = override("U0OLGA", at(7, 12), at(8, 12), 1)
    second = override("U0PETE", at(7, 18), at(7, 20), 2)
    other_level = override("U0NOPE", at(7, 0), at(9, 0), 3, level="CTO")
    overrides = [first, second, other_level]
    assert people_on_call(LEVEL, at(7, 11), overrides) == (A, "U0WATCHER")
    assert people_on_call(LEVEL, at(7, 12), overrides) == ("U0OLGA", "U0WATCHER")
    assert turn_holder(LEVEL, at(7, 19), overrides) == "U0PETE"
    assert turn_holder(LEVEL, at(7, 20), overrides) == "U0OLGA"
    assert turn_holder(LEVEL, at(8, 12), overrides) == B  # ended: the rotation's again
    fixed = Level("CTO", ("U0CTO",), None)
    assert people_on_call(fixed, at(7, 12), overrides) == ("U0CTO",)


def test_shifts_merge_turns_and_overrides_into_stretches_of_one_person() -> None:
    overrides = [override("U0OLGA", at(7, 12), at(8, 12))]
    found = shifts(LEVEL, at(7, 10), at(10, 0), overrides)
    assert [(s.user_id, s.starts_at, s.ends_at, s.override is not None) for s in found] == [
        (A, at(7, 10), at(7, 12), False),
        ("U0OLGA", at(7, 12), at(8, 12), True),
        (B, at(8, 12), at(9, 9), False),
        (C, at(9, 9), None, False),
    ]
