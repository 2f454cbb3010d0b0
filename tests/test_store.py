"""The store on SQLite and on PostgreSQL, through the same API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import MAX_AUDIT_TEXT, Store
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


def test_state_outlives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    first = Store(url)
    first.audit_start(user_id="U1", channel_id="C1", command="/health", text="all")
    first.close()
    second = Store(url)
    assert [e.text for e in second.audit_entries()] == ["all"]
    second.close()
