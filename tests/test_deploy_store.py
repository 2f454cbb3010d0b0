"""Locks, deployments and approvals: atomic where requests race (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import pytest

from bot.store import Deployment, EnvironmentLock, LockHeld, Store
from tests.support.clock import ManualClock

T = TypeVar("T")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


def all_at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run work(i) in count threads released together, and collect the results."""
    start = threading.Barrier(count)
    results: list[T] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        start.wait()
        result = work(i)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def begin(store: Store, user: str, env: str = "staging") -> Deployment | LockHeld:
    return store.begin_deployment(
        kind="deploy",
        environment=env,
        requested_by=user,
        version="1.0.0",
        options={"skip_tests": False},
        owner="host:1:1",
        channel="C0OPS",
    )


def test_of_concurrent_deploys_to_one_environment_exactly_one_runs(store: Store) -> None:
    results = all_at_once(8, lambda i: begin(store, f"U0USER{i}"))
    won = [r for r in results if isinstance(r, Deployment)]
    refused = [r for r in results if isinstance(r, LockHeld)]
    assert len(won) == 1 and len(refused) == 7
    assert {r.lock.holder for r in refused} == {won[0].requested_by}
    assert {r.lock.deployment_id for r in refused} == {won[0].id}
    assert len(store.deployments("staging", limit=100)) == 1
    # Another environment is not held up.
    assert isinstance(begin(store, "U0OTHER", env="dev"), Deployment)


def test_finishing_frees_the_lock_once(store: Store, clock: ManualClock) -> None:
    deployment = begin(store, "U0DEPLOY1")
    assert isinstance(deployment, Deployment)
    store.set_deployment_message(deployment.id, "C0OPS", "1.2", "https://slack/p12")
    held = begin(store, "U0DEPLOY2")
    assert isinstance(held, LockHeld) and held.lock.permalink == "https://slack/p12"
    clock.advance(seconds=42)
    assert store.finish_deployment(deployment.id, "succeeded", "Deployed v1.0.0") is True
    assert store.finish_deployment(deployment.id, "failed", "late") is False
    ended = store.deployment(deployment.id)
    assert ended is not None and ended.state == "succeeded"
    assert ended.duration == timedelta(seconds=42)
    assert store.environment_lock("staging") is None
    assert isinstance(begin(store, "U0DEPLOY2"), Deployment)


def test_an_interrupted_deployment_is_marked_once_and_its_lock_freed(store: Store) -> None:
    deployment = begin(store, "U0DEPLOY1")
    assert isinstance(deployment, Deployment)
    results = all_at_once(4, lambda i: store.interrupt_deployment(deployment.id, "bot died"))
    assert len([r for r in results if r is not None]) == 1
    assert store.environment_lock("staging") is None


def test_a_manual_lock_is_not_freed_with_a_wrong_token(store: Store) -> None:
    taken = store.acquire_manual_lock("staging", "U0DEPLOY1", "incident 42", "C0OPS")
    assert isinstance(taken, EnvironmentLock) and taken.kind == "manual"
    held = begin(store, "U0DEPLOY2")
    assert isinstance(held, LockHeld) and held.lock.reason == "incident 42"
    assert store.release_lock("staging", "not-the-token") is False
    assert store.release_lock("staging", taken.token) is True
    assert store.release_lock("staging", taken.token) is False


def test_cancel_is_asked_once_and_only_of_a_running_deployment(store: Store) -> None:
    deployment = begin(store, "U0DEPLOY1")
    assert isinstance(deployment, Deployment)
    assert store.request_cancel(deployment.id, "U0APPROVER1") is True
    assert store.request_cancel(deployment.id, "U0DEPLOY1") is False
    store.finish_deployment(deployment.id, "cancelled", "Cancelled")
    current = store.deployment(deployment.id)
    assert current is not None and current.cancel_requested_by == "U0APPROVER1"


def test_an_approval_is_decided_exactly_once(store: Store, clock: ManualClock) -> None:
    approval = store.create_approval(
        kind="deploy",
        environment="production",
        requested_by="U0DEPLOY1",
        payload={"version": "2.0.0"},
        expires_at=clock() + timedelta(minutes=30),
    )
    results = all_at_once(6, lambda i: store.decide_approval(approval.id, "approved", f"U0A{i}"))
    assert results.count(True) == 1
    decided = store.approval(approval.id)
    assert decided is not None and decided.state == "approved"
    assert store.decide_approval(approval.id, "rejected", "U0APPROVER2") is False
    assert store.decide_approval(approval.id, "expired", None) is False


def test_an_approval_past_its_time_can_only_expire(store: Store, clock: ManualClock) -> None:
    approval = store.create_approval(
        kind="rollback",
        environment="production",
        requested_by="U0DEPLOY1",
        payload={},
        expires_at=clock() + timedelta(minutes=30),
    )
    clock.advance(minutes=30)
    assert store.decide_approval(approval.id, "approved", "U0APPROVER1") is False
    assert store.decide_approval(approval.id, "expired", None) is True
    expired = store.approval(approval.id)
    assert expired is not None and expired.state == "expired" and expired.decided_by is None


def test_a_dead_run_is_taken_over_by_exactly_one_and_only_while_it_runs(
    store: Store, clock: ManualClock
) -> None:
    began = store.begin_deployment(
        kind="deploy",
        environment="staging",
        requested_by="U1",
        version="1.0.0",
        options={},
        owner="host:1:1",
    )
    assert isinstance(began, Deployment)
    clock.advance(minutes=5)
    taken = all_at_once(8, lambda i: store.claim_deployment(began.id, "host:1:1", f"replica-{i}"))
    assert taken.count(True) == 1
    claimed = store.deployment(began.id)
    assert claimed is not None and claimed.owner.startswith("replica-")
    assert claimed.heartbeat_at == clock.now  # alive again: no other sweep takes it
    assert store.environment_lock("staging") is not None  # its lock covers the repair
    store.finish_deployment(began.id, "interrupted", "cut short")
    assert not store.claim_deployment(began.id, claimed.owner, "late")
