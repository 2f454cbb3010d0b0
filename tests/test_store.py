"""The store on SQLite and on PostgreSQL, through the same API."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.store import MAX_AUDIT_TEXT, HealthCheck, Store
from tests.support.clock import SteppingClock


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url, clock=SteppingClock())
    yield store
    store.close()


def test_audit_round_trip(store: Store) -> None:
    audit_id = store.audit_start(user_id="U1", channel_id="C1", command="/health", text="staging")
    store.audit_finish(audit_id, outcome="ok", result="Health of staging: Healthy")
    (entry,) = store.audit_entries()
    assert (entry.user_id, entry.channel_id, entry.command, entry.text) == (
        "U1",
        "C1",
        "/health",
        "staging",
    )
    assert (entry.outcome, entry.result) == ("ok", "Health of staging: Healthy")
    assert entry.started_at.tzinfo is not None
    assert entry.finished_at is not None and entry.finished_at > entry.started_at


def test_long_text_is_cut_not_refused(store: Store) -> None:
    audit_id = store.audit_start(user_id="U1", channel_id="C1", command="/health", text="x" * 9000)
    store.audit_finish(audit_id, outcome="usage", result="y" * 9000)
    (entry,) = store.audit_entries()
    assert len(entry.text) == len(entry.result) == MAX_AUDIT_TEXT


def test_consecutive_results(store: Store) -> None:
    history = ["Healthy", "Unhealthy", "Healthy", "Unhealthy", "Unhealthy", "Unhealthy"]
    for health in history:
        store.record_health_check(
            environment="staging",
            health=health,
            status_code=None,
            latency_ms=None,
            version=None,
            reason="",
            checked_at=store.clock(),
        )
    store.record_health_check(
        environment="dev",
        health="Healthy",
        status_code=200,
        latency_ms=3.0,
        version="0.1.0",
        reason="",
        checked_at=store.clock(),
    )
    assert store.consecutive_results("staging", "Unhealthy") == 3
    assert store.consecutive_results("staging", "Healthy") == 0
    assert store.consecutive_results("dev", "Healthy") == 1
    assert store.health_check_count("staging") == 6


def check(environment: str, health: str, at: datetime) -> HealthCheck:
    return HealthCheck(environment, health, 200, 5.0, "0.1.0", "", at)


def test_a_batch_is_recorded_at_once_with_each_checks_streak(store: Store) -> None:
    now = store.clock()
    first = store.record_health_checks(
        [check("dev", "Healthy", now), check("staging", "Unhealthy", now)]
    )
    assert first == [1, 1]
    # The same environment twice in one batch counts in order.
    second = store.record_health_checks(
        [
            check("staging", "Unhealthy", now),
            check("dev", "Degraded", now),
            check("staging", "Unhealthy", now),
        ]
    )
    assert second == [2, 1, 3]
    assert store.consecutive_results("staging", "Unhealthy") == 3
    assert store.consecutive_results("dev", "Degraded") == 1
    assert store.consecutive_results("dev", "Healthy") == 0
    assert store.health_check_count() == 5
    assert store.record_health_checks([]) == []


def test_old_history_is_pruned_and_the_streaks_stay(store: Store) -> None:
    old, recent = store.clock(), store.clock()
    store.record_health_checks([check("staging", "Unhealthy", old)] * 3)
    store.record_health_checks([check("staging", "Unhealthy", recent)])
    assert store.prune_health_checks(recent) == 3
    assert store.health_check_count() == 1
    assert store.consecutive_results("staging", "Unhealthy") == 4


def test_concurrent_batches_all_count(store: Store) -> None:
    # Two checks running at once (a report and a scheduled run) both record their batches.
    now = store.clock()

    def record(_: int) -> list[int]:
        return store.record_health_checks([check(f"env{i}", "Healthy", now) for i in range(20)])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(record, range(8)))
    assert sorted(r[0] for r in results) == list(range(1, 9))
    assert store.consecutive_results("env7", "Healthy") == 8


def test_streaks_continue_from_a_history_recorded_before_streaks_were_kept(store: Store) -> None:
    now = store.clock()
    store.record_health_checks([check("prod", h, now) for h in ("Healthy", "Degraded", "Degraded")])
    with store.engine.begin() as conn:  # a database from before the streaks table
        conn.execute(text("DELETE FROM health_streaks"))
    assert store.consecutive_results("prod", "Degraded") == 2
    assert store.record_health_checks([check("prod", "Degraded", now)]) == [3]


def test_state_outlives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    first = Store(url)
    first.audit_start(user_id="U1", channel_id="C1", command="/health", text="all")
    first.close()
    second = Store(url)
    assert [e.text for e in second.audit_entries()] == ["all"]
    second.close()
