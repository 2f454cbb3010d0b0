"""The store's part of issue 16, on SQLite and PostgreSQL: one open incident per dedupe key
whoever opens it at the same moment (a unique index, not a check first), and retention."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

import bot.store.incidents as incidents_module
from bot.config import RetentionSettings
from bot.runbook.incidents.escalation import Action, Escalations
from bot.runbook.retention import prune_old_rows
from bot.store import AlertEventRecord, IncidentRecord, Store, TimerRecord
from tests.support.clock import ManualClock
from tests.test_escalation import APPROVERS, PLAN

KEY = "alert:production:health"


def open_keyed(store: Store, clock: ManualClock, summary: str = "api down") -> tuple[int, bool]:
    desk = Escalations(store, clock=clock)
    incident, created = asyncio.run(
        desk.open(summary, 1, "alert", PLAN, dedupe_key=KEY)  # type: ignore[arg-type]
    )
    return incident.id, created


def test_replicas_opening_the_same_key_at_once_open_one(store_url: str) -> None:
    clock = ManualClock()
    Store(store_url, clock=clock).close()  # the schema, once
    start = threading.Barrier(6)
    results: list[tuple[int, bool]] = []

    def replica() -> None:
        store = Store(store_url, clock=clock)
        try:
            start.wait()
            results.append(open_keyed(store, clock))
        finally:
            store.close()

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [created for _, created in results].count(True) == 1
    assert len({incident_id for incident_id, _ in results}) == 1


def test_the_index_holds_where_the_check_missed(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    store = Store(store_url, clock=clock)
    first, created = open_keyed(store, clock)
    assert created
    # The race: a second opener looked before the first one's row was there.
    real = incidents_module._open_with_key
    missed = iter([True])
    monkeypatch.setattr(
        incidents_module,
        "_open_with_key",
        lambda session, key: None if next(missed, False) else real(session, key),
    )
    again, created = open_keyed(store, clock, "api down (an Escalate press)")
    assert (again, created) == (first, False)  # its insert failed; it read the winner's
    with pytest.raises(IntegrityError), store._session() as session, session.begin():
        session.add(
            IncidentRecord(
                summary="x", severity=1, source="alert", dedupe_key=KEY, plan="{}",
                status="triggered", opened_at=clock(),
            )
        )  # fmt: skip
    # Resolved, the key is free again: a new alert after a resolution is a new incident.
    desk = Escalations(store, clock=clock)
    incident = store.incident(first)
    assert incident is not None
    asyncio.run(
        desk.press(first, Action.RESOLVE, "U0APPROVER1", seen_seq=None, approvers=APPROVERS)
    )
    newer, created = open_keyed(store, clock)
    assert created and newer != first
    store.close()


def test_retention_drops_old_fired_timers_audit_and_events_only(store_url: str) -> None:
    clock = ManualClock()
    store = Store(store_url, clock=clock)
    # 100 days ago: an audit row, a timer that fired, one still pending, a resolved incident
    # with its timeline, an alert thread line posted and one not yet.
    old_audit = store.audit_start(user_id="U1", channel_id="C1", command="/health", text="")
    store.schedule_timer("old.fired", "k", clock())
    (fired,) = store.claim_due_timers("me", clock(), timedelta(minutes=1))
    store.finish_timer(fired.id, "me")
    store.schedule_timer("still.pending", "k", clock() + timedelta(days=365))
    old_incident, _ = open_keyed(store, clock)
    desk = Escalations(store, clock=clock)
    asyncio.run(
        desk.press(old_incident, Action.RESOLVE, "U0APPROVER1", seen_seq=None, approvers=APPROVERS)
    )
    with store._session() as session, session.begin():
        for done in (True, False):
            session.add(
                AlertEventRecord(alert_id=1, kind="raised", detail="", at=clock(), done=done)
            )
    clock.advance(days=100)
    recent_audit = store.audit_start(user_id="U1", channel_id="C1", command="/health", text="")
    recent, _ = asyncio.run(
        Escalations(store, clock=clock).open("db slow", 2, "/escalate", PLAN)  # type: ignore[arg-type]
    )

    pruned = asyncio.run(prune_old_rows(store, RetentionSettings(), clock))

    assert pruned == {"fired timers": 1, "audit rows": 1, "incident and alert events": 3}
    assert [e.id for e in store.audit_entries()] == [recent_audit]
    assert old_audit not in [e.id for e in store.audit_entries()]
    with store._session() as session:
        kinds = set(session.scalars(select(TimerRecord.kind)).all())
    assert "old.fired" not in kinds and "still.pending" in kinds
    assert store.incident_events(old_incident) == []
    assert store.incident(old_incident) is not None  # the record itself stays
    assert [e.kind for e in store.incident_events(recent.id)] == ["opened"]
    assert len(store.alert_events(1, pending=True)) == 1  # not posted yet: kept
    store.close()
