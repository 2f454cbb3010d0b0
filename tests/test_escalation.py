"""The escalation state machine, applied through the store, with a clock the test moves.

Runs on SQLite and on PostgreSQL (store_url): every change is a conditional UPDATE on the
incident's seq, written together with its timeline event and its timers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bot.config import load_config
from bot.runbook.incidents.escalation import (
    DEADLINE_TIMER,
    SYNC_TIMER,
    Action,
    Changed,
    EscalationPlan,
    Escalations,
    Level,
    NotAllowed,
    PressRefused,
    Stale,
    Step,
    parse_incident_name,
    time_to_acknowledge,
    time_to_resolve,
)
from bot.store import Incident, Store
from tests.conftest import EXAMPLE_CONFIG
from tests.support.clock import ManualClock

MIN = timedelta(minutes=1)
PLAN = EscalationPlan(
    levels=(
        Level("On-call DevOps Engineer", ("U0ONCALL",), 10 * MIN),
        Level("DevOps Team Lead", ("U0LEAD", "U0LEAD2"), 15 * MIN),
        Level("Engineering Manager", ("U0MANAGER",), 30 * MIN),
        Level("CTO", ("U0CTO",), None),
    ),
    repeat_every=60 * MIN,
    ack_reminder=30 * MIN,
    reopen_after=15 * MIN,
)
APPROVERS = ("U0APPROVER1",)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


@pytest.fixture
def desk(store: Store, clock: ManualClock) -> Escalations:
    return Escalations(store, clock=clock)


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def open_one(desk: Escalations, plan: EscalationPlan = PLAN, **kwargs: object) -> Incident:
    incident, created = run(desk.open("api 5xx spike", 2, "/escalate", plan, **kwargs))  # type: ignore[arg-type]
    assert created
    return incident


def press(
    desk: Escalations, incident: Incident, action: Action, user: str, seen: int | None = -1
) -> object:
    seen_seq = incident.seq if seen == -1 else seen
    return run(desk.press(incident.id, action, user, seen_seq=seen_seq, approvers=APPROVERS))


def changed(result: object) -> Incident:
    assert isinstance(result, Changed), result
    return result.incident


def deadline(desk: Escalations, clock: ManualClock, incident: Incident) -> Incident:
    """Move the clock to the incident's deadline and fire it."""
    assert incident.deadline_at is not None
    clock.now = incident.deadline_at
    moved = run(desk.on_deadline(incident.id, incident.seq))
    assert moved is not None
    return moved


def steps(store: Store, incident: Incident) -> list[tuple[str, int, str | None]]:
    return [(e.kind, e.level, e.user_id) for e in store.incident_events(incident.id)]


def test_the_plan_comes_from_the_config_with_offsets_and_survives_json() -> None:
    config = load_config(EXAMPLE_CONFIG)
    plan = EscalationPlan.from_config(config.escalation, config.alerts)
    assert [level.name for level in plan.levels] == [
        "On-call DevOps Engineer",
        "DevOps Team Lead",
        "Engineering Manager",
        "CTO",
    ]
    assert plan.offsets() == [timedelta(0), 10 * MIN, 25 * MIN, 55 * MIN]
    assert (plan.repeat_every, plan.ack_reminder, plan.reopen_after) == (
        60 * MIN,
        30 * MIN,
        15 * MIN,
    )
    assert EscalationPlan.from_json(plan.to_json()) == plan
    assert [plan.wait_at(n) for n in range(4)] == [10 * MIN, 15 * MIN, 30 * MIN, 60 * MIN]


def test_opening_freezes_the_plan_and_sets_the_first_deadline_with_the_first_event(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    opened_at = clock()
    incident = open_one(desk, opened_by="U0USER", channel="C0INCIDENTS")
    assert parse_incident_name(f"INC-{incident.id}") == incident.id
    assert (incident.status, incident.level, incident.seq) == ("triggered", 0, 1)
    assert incident.deadline_at == opened_at + 10 * MIN
    assert EscalationPlan.from_json(incident.plan) == PLAN
    assert steps(store, incident) == [("opened", 0, "U0USER")]
    timers = {(t.kind, t.key): t for t in store.pending_timers()}
    name = f"INC-{incident.id}"
    assert timers[(DEADLINE_TIMER, name)].payload == {"seq": 1}
    assert timers[(DEADLINE_TIMER, name)].due_at == opened_at + 10 * MIN
    assert timers[(SYNC_TIMER, f"{name}/1")].due_at == opened_at


def test_nobody_acknowledging_walks_every_level_then_repeats_the_last(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = open_one(desk)
    opened_at = clock()
    walked = [(incident.level, clock() - opened_at)]
    for _ in range(5):
        incident = deadline(desk, clock, incident)
        walked.append((incident.level, clock() - opened_at))
    assert walked == [
        (0, timedelta(0)),
        (1, 10 * MIN),
        (2, 25 * MIN),
        (3, 55 * MIN),
        (3, 115 * MIN),
        (3, 175 * MIN),
    ]
    assert [kind for kind, _, _ in steps(store, incident)] == [
        "opened",
        "escalated",
        "escalated",
        "escalated",
        "repaged",
        "repaged",
    ]
    assert incident.top_level == 3 and incident.paged_seq == incident.seq
    # One deadline pending, for the state the incident is in now.
    (pending,) = store.pending_timers(DEADLINE_TIMER)
    assert pending.payload == {"seq": incident.seq}
    assert pending.due_at == clock() + 60 * MIN


def test_a_deadline_fired_again_after_a_crash_changes_nothing(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = open_one(desk)
    clock.advance(minutes=10)
    first = run(desk.on_deadline(incident.id, 1))
    again = run(desk.on_deadline(incident.id, 1))
    assert first is not None and first.level == 1
    assert again is None
    assert [kind for kind, _, _ in steps(store, incident)] == ["opened", "escalated"]


def test_acknowledging_at_level_two_stops_the_escalation(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = deadline(desk, clock, open_one(desk))
    clock.advance(minutes=3)
    acked = changed(press(desk, incident, Action.ACKNOWLEDGE, "U0LEAD2"))
    assert (acked.status, acked.level, acked.acknowledged_by) == ("acknowledged", 1, "U0LEAD2")
    assert acked.deadline_at == clock() + 30 * MIN  # the reminder, not the next level
    assert time_to_acknowledge(acked) == 13 * MIN
    # The level-2 deadline that was pending is gone: it was replaced, and firing it is a no-op.
    assert run(desk.on_deadline(incident.id, incident.seq)) is None
    (pending,) = store.pending_timers(DEADLINE_TIMER)
    assert pending.payload == {"seq": acked.seq}


def test_an_unanswered_reminder_reopens_at_the_acknowledged_level(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = deadline(desk, clock, open_one(desk))
    acked = changed(press(desk, incident, Action.ACKNOWLEDGE, "U0LEAD"))
    reminded = deadline(desk, clock, acked)
    assert reminded.status == "acknowledged" and reminded.reminded_at == clock()
    assert reminded.deadline_at == clock() + 15 * MIN
    reopened = deadline(desk, clock, reminded)
    assert (reopened.status, reopened.level) == ("triggered", 1)
    assert reopened.acknowledged_by is None and reopened.paged_seq == reopened.seq
    assert reopened.deadline_at == clock() + 15 * MIN  # level 2's own timeout again
    assert reopened.first_acknowledged_at == acked.acknowledged_at
    assert steps(store, incident)[-3:] == [
        ("acknowledged", 1, "U0LEAD"),
        ("reminded", 1, "U0LEAD"),
        ("reopened", 1, "U0LEAD"),
    ]


def test_still_working_pushes_the_reminder_back(desk: Escalations, clock: ManualClock) -> None:
    incident = open_one(desk)
    acked = changed(press(desk, incident, Action.ACKNOWLEDGE, "U0ONCALL"))
    snooze_too_early = press(desk, acked, Action.SNOOZE, "U0ONCALL")
    assert isinstance(snooze_too_early, PressRefused)
    assert "no reminder" in snooze_too_early.reason
    reminded = deadline(desk, clock, acked)
    clock.advance(minutes=5)
    snoozed = changed(press(desk, reminded, Action.SNOOZE, "U0ONCALL"))
    assert snoozed.reminded_at is None and snoozed.status == "acknowledged"
    assert snoozed.deadline_at == clock() + 30 * MIN
    # The re-open that the reminder had set is void.
    assert run(desk.on_deadline(incident.id, reminded.seq)) is None


def test_resolving_records_the_times_and_ends_every_timer(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = open_one(desk)
    clock.advance(minutes=4)
    acked = changed(press(desk, incident, Action.ACKNOWLEDGE, "U0ONCALL"))
    clock.advance(minutes=20)
    resolved = changed(press(desk, acked, Action.RESOLVE, "U0ONCALL"))
    assert (resolved.status, resolved.resolved_by, resolved.deadline_at) == (
        "resolved",
        "U0ONCALL",
        None,
    )
    assert time_to_acknowledge(resolved) == 4 * MIN
    assert time_to_resolve(resolved) == 24 * MIN
    assert store.pending_timers(DEADLINE_TIMER) == []
    for action in Action:
        refused = press(desk, resolved, action, "U0ONCALL")
        assert isinstance(refused, PressRefused) and "resolved already" in refused.reason
    assert run(desk.unresolved()) == []


def test_escalate_moves_up_at_once_and_past_the_last_level_pages_it_again(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = open_one(desk)
    for expected in (1, 2, 3, 3):
        incident = changed(press(desk, incident, Action.ESCALATE, "U0APPROVER1"))
        assert incident.level == expected
    assert incident.deadline_at == clock() + 60 * MIN
    assert [kind for kind, _, _ in steps(store, incident)][-2:] == ["escalated", "repaged"]


def test_escalate_from_acknowledged_asks_the_next_level_for_help(
    desk: Escalations, clock: ManualClock
) -> None:
    acked = changed(press(desk, open_one(desk), Action.ACKNOWLEDGE, "U0ONCALL"))
    helped = changed(press(desk, acked, Action.ESCALATE, "U0ONCALL"))
    assert (helped.status, helped.level, helped.acknowledged_by) == ("triggered", 1, None)
    assert helped.first_acknowledged_at == acked.acknowledged_at
    assert helped.deadline_at == clock() + 15 * MIN


def test_a_press_on_an_older_state_changes_nothing(desk: Escalations, store: Store) -> None:
    incident = open_one(desk)
    escalated = changed(press(desk, incident, Action.ESCALATE, "U0ONCALL"))
    # The level-1 page's Escalate button, pressed after the escalation: stale.
    stale = press(desk, incident, Action.ESCALATE, "U0ONCALL", seen=incident.seq)
    assert isinstance(stale, Stale) and stale.incident.seq == escalated.seq
    # The same Acknowledge delivered twice: the second finds it acknowledged already.
    acked = changed(press(desk, escalated, Action.ACKNOWLEDGE, "U0LEAD"))
    again = press(desk, escalated, Action.ACKNOWLEDGE, "U0LEAD", seen=escalated.seq)
    assert isinstance(again, PressRefused) and again.incident.seq == acked.seq
    # Without a block_id to go by, the current state decides.
    unknown = press(desk, acked, Action.ACKNOWLEDGE, "U0LEAD", seen=None)
    assert isinstance(unknown, PressRefused) and "acknowledged already" in unknown.reason
    assert [kind for kind, _, _ in steps(store, incident)].count("acknowledged") == 1


def test_acknowledge_on_an_older_state_acknowledges_what_nobody_has(
    desk: Escalations, store: Store
) -> None:
    incident = open_one(desk)
    escalated = changed(press(desk, incident, Action.ESCALATE, "U0ONCALL"))
    # Level 1's page, pressed after the escalation paged level 2: acknowledging is unambiguous.
    acked = changed(press(desk, incident, Action.ACKNOWLEDGE, "U0ONCALL", seen=incident.seq))
    assert (acked.status, acked.acknowledged_by, acked.level) == ("acknowledged", "U0ONCALL", 1)
    assert acked.seq == escalated.seq + 1
    # Another old copy, after that: nothing changes, and the answer knows who and when.
    late = press(desk, incident, Action.ACKNOWLEDGE, "U0APPROVER1", seen=incident.seq)
    assert isinstance(late, PressRefused)
    assert (late.incident.acknowledged_by, late.incident.acknowledged_at) == (
        "U0ONCALL",
        acked.acknowledged_at,
    )
    assert [kind for kind, _, _ in steps(store, incident)].count("acknowledged") == 1


def test_two_acknowledgements_at_the_same_moment_give_one(
    store_url: str, clock: ManualClock
) -> None:
    setup = Store(store_url, clock=clock)
    incident = open_one(Escalations(setup, clock=clock))
    setup.close()
    results: list[object] = []
    start = threading.Barrier(4)

    def presser(user: str) -> None:
        store = Store(store_url, clock=clock)
        try:
            desk = Escalations(store, clock=clock)
            start.wait()
            results.append(press(desk, incident, Action.ACKNOWLEDGE, user, seen=None))
        finally:
            store.close()

    users = ["U0ONCALL", "U0APPROVER1", "U0ONCALL", "U0APPROVER1"]
    threads = [threading.Thread(target=presser, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, Changed) for r in results) == 1
    assert all(isinstance(r, Changed | Stale | PressRefused) for r in results)
    check = Store(store_url, clock=clock)
    try:
        kinds = [e.kind for e in check.incident_events(incident.id)]
        assert kinds == ["opened", "acknowledged"]
        assert len(check.pending_timers(DEADLINE_TIMER)) == 1
    finally:
        check.close()


def test_only_people_paged_so_far_or_approvers_may_press(desk: Escalations, store: Store) -> None:
    incident = open_one(desk)
    for outsider in ("U0STRANGER", "U0LEAD"):  # the lead is not paged yet
        refused = press(desk, incident, Action.RESOLVE, outsider)
        assert isinstance(refused, NotAllowed)
    escalated = changed(press(desk, incident, Action.ESCALATE, "U0ONCALL"))
    changed(press(desk, escalated, Action.ACKNOWLEDGE, "U0LEAD2"))
    assert [kind for kind, _, _ in steps(store, incident)] == [
        "opened",
        "escalated",
        "acknowledged",
    ]


def test_with_no_levels_nobody_is_paged_and_an_approver_can_close_it(
    desk: Escalations, store: Store
) -> None:
    empty = EscalationPlan((), 60 * MIN, 30 * MIN, 15 * MIN)
    incident = open_one(desk, empty)
    assert incident.deadline_at is None
    assert store.pending_timers(DEADLINE_TIMER) == []
    refused = press(desk, incident, Action.ESCALATE, "U0APPROVER1")
    assert isinstance(refused, PressRefused) and "no escalation levels" in refused.reason
    assert isinstance(press(desk, incident, Action.RESOLVE, "U0USER"), NotAllowed)
    assert changed(press(desk, incident, Action.RESOLVE, "U0APPROVER1")).status == "resolved"


def test_a_dedupe_key_returns_the_open_incident_until_it_is_resolved(desk: Escalations) -> None:
    first = open_one(desk, dedupe_key="alert:staging:latency")
    again, created = run(
        desk.open("latency again", 1, "alert", PLAN, dedupe_key="alert:staging:latency")
    )
    assert not created and again.id == first.id
    changed(press(desk, first, Action.RESOLVE, "U0ONCALL"))
    later, created = run(
        desk.open("latency again", 1, "alert", PLAN, dedupe_key="alert:staging:latency")
    )
    assert created and later.id != first.id


def test_bad_openings_are_refused_and_long_summaries_cut(desk: Escalations) -> None:
    with pytest.raises(ValueError, match="summary"):
        run(desk.open("  \n ", 2, "alert", PLAN))
    with pytest.raises(ValueError, match="severity"):
        run(desk.open("db down", 9, "alert", PLAN))
    incident = open_one(desk)
    long, _ = run(desk.open("x" * 5000, 1, "rollback", PLAN))
    assert len(long.summary) == 300 and long.summary.endswith("…")
    assert run(desk.unresolved())[0].id == incident.id


def test_a_note_goes_on_the_timeline_without_changing_the_state(
    desk: Escalations, store: Store
) -> None:
    incident = open_one(desk)
    assert run(desk.note(incident.id, "alert staging/latency resolved"))
    assert not run(desk.note(incident.id + 100, "nowhere"))
    after = run(desk.get(incident.id))
    assert after is not None and after.seq == incident.seq
    (note,) = [e for e in store.incident_events(incident.id) if e.kind == Step.NOTE]
    assert note.detail == "alert staging/latency resolved"
    assert any(t.key == f"INC-{incident.id}/e{note.id}" for t in store.pending_timers(SYNC_TIMER))


def test_posting_about_an_incident_is_one_bots_at_a_time_until_its_lease_runs_out(
    desk: Escalations, store: Store, clock: ManualClock
) -> None:
    incident = open_one(desk)
    lease = timedelta(minutes=2)
    assert store.lease_incident_sync(incident.id, "bot-a", clock(), lease)
    assert store.lease_incident_sync(incident.id, "bot-a", clock(), lease)  # its own again
    assert not store.lease_incident_sync(incident.id, "bot-b", clock(), lease)
    clock.advance(minutes=2, seconds=1)  # bot-a died holding it
    assert store.lease_incident_sync(incident.id, "bot-b", clock(), lease)
    store.release_incident_sync(incident.id, "bot-a")  # not its lease any more: no effect
    assert not store.lease_incident_sync(incident.id, "bot-a", clock(), lease)
    store.release_incident_sync(incident.id, "bot-b")
    assert store.lease_incident_sync(incident.id, "bot-a", clock(), lease)


def test_a_message_is_recorded_once_and_its_shown_state_only_moves_forward(
    desk: Escalations, store: Store
) -> None:
    incident = open_one(desk)
    page = {"role": "page", "step": 1, "target": "U0ONCALL", "channel": "D0ONCALL"}
    assert store.record_incident_message(incident.id, **page, ts="1.1", shown_seq=1)
    assert not store.record_incident_message(incident.id, **page, ts="1.2", shown_seq=1)
    (message,) = store.incident_messages(incident.id)
    assert (message.ts, message.shown_seq, message.error) == ("1.1", 1, None)
    store.mark_incident_message_shown(message.id, 4)
    store.mark_incident_message_shown(message.id, 3)
    (message,) = store.incident_messages(incident.id)
    assert message.shown_seq == 4
