"""No drift: each escalation deadline counts from when the step was due, not from when the bot
got round to it, and each level's pages are written with the step, due when it was due.

A hand-moved clock handles every step late (as a busy bot, or one whose Slack was away, does):
the fifth level is still paged at the sum of the timeouts. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bot.runbook.incidents.escalation import (
    PAGE_DELIVERY,
    EscalationPlan,
    Escalations,
    Level,
    Step,
)
from bot.store import Incident, Store
from tests.support.clock import ManualClock

S = timedelta(seconds=1)
TIMEOUTS = (10 * S, 20 * S, 30 * S, 40 * S)
FIVE_LEVELS = EscalationPlan(
    levels=(
        Level("On-call DevOps Engineer", ("U0ONCALL",), TIMEOUTS[0]),
        Level("DevOps Team Lead", ("U0LEAD",), TIMEOUTS[1]),
        Level("Engineering Manager", ("U0MANAGER",), TIMEOUTS[2]),
        Level("VP Engineering", ("U0VP",), TIMEOUTS[3]),
        Level("CTO", ("U0CTO",), None),
    ),
    repeat_every=60 * S,
    ack_reminder=30 * 60 * S,
    reopen_after=15 * 60 * S,
)
LATE = timedelta(milliseconds=900)  # how late the bot handles each step


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


def fire(desk: Escalations, incident: Incident) -> Incident:
    moved = asyncio.run(desk.on_deadline(incident.id, incident.seq))
    assert moved is not None
    return moved


def test_the_fifth_level_is_paged_at_the_sum_of_the_timeouts_however_late_each_step_ran(
    store: Store, clock: ManualClock
) -> None:
    desk = Escalations(store, clock=clock)
    incident, _ = asyncio.run(desk.open("api 5xx spike", 1, "/escalate", FIVE_LEVELS))
    opened = incident.opened_at
    due = opened
    for timeout in TIMEOUTS:
        due += timeout
        assert incident.deadline_at == due  # not pushed by the late handling before it
        clock.now = due + LATE
        incident = fire(desk, incident)
    assert incident.level == 4
    assert due == opened + sum(TIMEOUTS, timedelta(0))

    pages = store.deliveries_of("INC-1", PAGE_DELIVERY)
    assert [(p.user_id, p.due_at - opened) for p in pages] == [
        ("U0ONCALL", timedelta(0)),
        ("U0LEAD", 10 * S),
        ("U0MANAGER", 30 * S),
        ("U0VP", 60 * S),
        ("U0CTO", 100 * S),  # the sum of the timeouts, to the second
    ]
    # Written when the step ran: less than a second after it was due, every time.
    assert all(p.created_at - p.due_at <= LATE for p in pages)
    # And the last level's repeats keep to the same grid.
    assert incident.deadline_at == opened + 100 * S + FIVE_LEVELS.repeat_every


def test_a_bot_back_after_missing_every_deadline_pages_each_level_once_then_one_repeat(
    store: Store, clock: ManualClock
) -> None:
    desk = Escalations(store, clock=clock)
    incident, _ = asyncio.run(desk.open("db down", 1, "/escalate", FIVE_LEVELS))
    opened = incident.opened_at
    clock.now = opened + 10 * 60 * S  # down for ten minutes: four levels and nine repeats due
    while incident.deadline_at is not None and incident.deadline_at <= clock.now:
        incident = fire(desk, incident)
    steps = [e.kind for e in store.incident_events(incident.id)]
    assert steps == [Step.OPENED] + [Step.ESCALATED] * 4 + [Step.REPAGED]
    pages = store.deliveries_of("INC-1", PAGE_DELIVERY)
    assert [p.user_id for p in pages] == [
        "U0ONCALL",
        "U0LEAD",
        "U0MANAGER",
        "U0VP",
        "U0CTO",
        "U0CTO",
    ]
    assert [p.due_at - opened for p in pages[1:5]] == [10 * S, 30 * S, 60 * S, 100 * S]
    # The missed repeats are one page, and the next keeps to the grid after now.
    assert incident.deadline_at == opened + 100 * S + 9 * FIVE_LEVELS.repeat_every  # 10:40
