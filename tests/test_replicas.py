"""Any number of replicas on one PostgreSQL database, one behaviour (real bot processes).

Started together on an empty database they all start (the schema is migrated under a lock);
exactly one of them runs the scheduled checks (the checking lease), so an alert posts once;
when that one is SIGKILLed another takes over within one check interval and alerts still
post once; due timers raced for by three replicas fire once each.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.runbook.alerts.states import Metric
from bot.slack.changes.locks import LOCK_REMINDER_TIMER
from bot.store import LockHeld, Store, TimerRecord
from tests.conftest import TEST_DATABASE, DemoService, new_channel, write_config
from tests.support import postgres
from tests.support.alerts import alert_posts, alerts_config
from tests.support.replicas import (
    checkers,
    metric,
    start_replicas,
    stop_replicas,
)
from tests.support.slack_fake import ApiCall, SlackFake
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    TEST_DATABASE == "postgres", reason="on PostgreSQL in every run already: once is enough"
)
CHECK_INTERVAL_S = 3


def test_replicas_started_together_on_an_empty_database_all_start(
    tmp_path: Path, slack: SlackFake, bot_config: Path
) -> None:
    # On main, one of two exited 2 every time: create_all raced (duplicate key in pg_type).
    # 20 pairs, each on a new database.
    reason = postgres.unreachable_reason()
    if reason is not None:
        pytest.skip(reason)

    def pair(round_number: int) -> list[int]:
        url = postgres.create_database("replicas")
        try:
            bots = start_replicas(tmp_path / f"round-{round_number}", slack, bot_config, url, 2)
            assert all(bot.process.poll() is None for bot in bots)
            return stop_replicas(bots)
        finally:
            postgres.drop_database(url)

    # One pair at a time: four bots starting at once on 2 cores shared with the rest of the
    # suite took longer than the 30 s a start may take.
    codes = [pair(round_number) for round_number in range(20)]
    assert codes == [[0, 0]] * 20


def test_one_checker_an_alert_once_and_a_take_over_within_one_interval(
    tmp_path: Path,
    slack: SlackFake,
    demo: DemoService,
    demo_b: DemoService,
    postgres_database: str,
) -> None:
    channel = new_channel()
    config = alerts_config(
        tmp_path / "eventmesh.yml",
        {"staging": demo.url, "dev": demo_b.url},
        alerts_channel=channel,
        incidents_channel=new_channel(),
        check_interval=f"{CHECK_INTERVAL_S}s",
    )
    bots = start_replicas(tmp_path, slack, config, postgres_database, 3)
    try:
        wait_until("one replica holds the checking lease", lambda: len(checkers(bots)) == 1)
        demo.set_faults(healthz_status=503)
        slack.wait_for(lambda s: len(alert_posts(s, channel)) >= 1, timeout=30)
        (checker,) = checkers(bots)
        others = [bot for bot in bots if bot is not checker]
        # Only the lease holder checks: the others have run no check cycle at all.
        assert [metric(bot, "eventmesh_bot_check_cycles_total") for bot in others] == [0, 0]

        checker.process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        checker.process.wait()
        wait_until("a check after the kill", lambda: checks_since(demo, killed_at), timeout=30)
        resumed_after = min(checks_since(demo, killed_at)) - killed_at
        assert resumed_after <= CHECK_INTERVAL_S, f"checks resumed after {resumed_after:.1f} s"
        wait_until("another replica holds the lease", lambda: len(checkers(others)) == 1)

        # The new checker read the states from the store: staging's alert is not posted
        # again, and dev's new alert is posted once.
        demo_b.set_faults(healthz_status=503)
        slack.wait_for(lambda s: len(alert_posts(s, channel)) >= 2, timeout=30)
        demo.reset()
        demo_b.reset()
        store = Store(postgres_database)
        wait_until(
            "both alerts resolved",
            lambda: [a.status for a in store.alerts()] == ["resolved", "resolved"],
        )
        posts = alert_posts(slack, channel)
        assert len(posts) == 2, [p.args.get("text") for p in posts]
        assert sorted(a.environment for a in store.alerts()) == ["dev", "staging"]
        state = store.alert_state("staging", Metric.HEALTH.value)
        assert state is not None and state.level == "Normal"
        store.close()
    finally:
        codes = stop_replicas(bots)
    assert codes.count(0) == 2, codes  # the killed one aside, each stopped cleanly


def checks_since(demo: DemoService, moment: float) -> list[float]:
    return [
        r["started"] for r in demo.requests() if r["path"] == "/healthz" and r["started"] >= moment
    ]


def test_due_timers_raced_for_by_three_replicas_fire_once_each(
    tmp_path: Path, slack: SlackFake, postgres_database: str, bot_config: Path
) -> None:
    # 100 environments locked by hand, each holder's reminder due now: a DM each, exactly once.
    run = uuid.uuid4().hex[:6].upper()
    holders = {f"env-{n}": f"U{run}{n:03d}" for n in range(100)}
    store = Store(postgres_database)
    timer_ids = []
    for env, holder in holders.items():
        taken = store.acquire_manual_lock(env, holder, "freeze", None)
        assert not isinstance(taken, LockHeld)
        timer_ids.append(
            store.schedule_timer(LOCK_REMINDER_TIMER, env, store.clock(), {"token": taken.token})
        )
    bots = start_replicas(tmp_path, slack, bot_config, postgres_database, 3)
    try:
        wait_until(
            "every reminder fired",
            lambda: all(t.id not in timer_ids for t in store.pending_timers(LOCK_REMINDER_TIMER)),
            timeout=60,
        )
    finally:
        codes = stop_replicas(bots)  # a handler still running finishes first
    assert codes == [0, 0, 0]
    reminded = {
        holder: len(slack.channel_messages("D" + holder[1:])) for holder in holders.values()
    }
    assert set(reminded.values()) == {1}, {h: n for h, n in reminded.items() if n != 1}
    with store._session() as session:
        rows = session.query(TimerRecord).filter(TimerRecord.id.in_(timer_ids)).all()
    assert len(rows) == 100
    assert {(row.attempts, row.fired_at is not None) for row in rows} == {(1, True)}
    # The next reminders are set, once each.
    assert len(store.pending_timers(LOCK_REMINDER_TIMER)) == 100
    store.close()


def test_a_replica_killed_right_after_a_page_delays_no_level(
    tmp_path: Path, slack: SlackFake, postgres_database: str, dead_url: str
) -> None:
    # 3 s levels; the replica that sends the first page dies right after it.
    run = uuid.uuid4().hex[:6].upper()
    team = [f"U{run}L{level}" for level in (1, 2, 3)]
    incidents = new_channel()
    config = write_config(
        tmp_path / "eventmesh.yml",
        {"staging": dead_url},
        slack={"alerts_channel": new_channel(), "incidents_channel": incidents},
        escalation={
            "levels": [
                {"name": "On-call", "users": [team[0]], "timeout": f"{LEVEL_S}s"},
                {"name": "Lead", "users": [team[1]], "timeout": f"{LEVEL_S}s"},
                {"name": "Manager", "users": [team[2]]},
            ]
        },
    )
    bots = start_replicas(tmp_path, slack, config, postgres_database, 2)
    engine = create_engine(postgres_database)
    killed: list[int] = []

    def kill_the_pager(call: ApiCall) -> None:
        # Slack has the first page; the bot that sent it dies before it hears so, holding the
        # incident's posting lease and its sync timer's claim.
        if killed or call.method != "chat.postMessage" or call.args.get("channel") != dm(team[0]):
            return
        with (
            engine.connect() as connection
        ):  # the replica delivering that page (bot/store/outbox.py)
            owner = connection.execute(
                text("SELECT claimed_by FROM outbox WHERE user_id = :user"), {"user": team[0]}
            ).scalar()
        pid = int(str(owner).rsplit(":", 2)[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    slack.on_call = kill_the_pager
    try:
        opened = time.monotonic()
        bots[0].command("/escalate", "payments down --sev 1", channel=incidents)
        pages = slack.wait_for(lambda s: paged(s, team) if len(paged(s, team)) == 3 else None, 45)
    finally:
        slack.on_call = None
        engine.dispose()
        codes = stop_replicas(bots)
    assert len(killed) == 1 and codes.count(-signal.SIGKILL) == 1, codes
    late = {user: at - (opened + LEVEL_S * level) for level, (user, at) in enumerate(pages.items())}
    assert all(seconds <= 15 for seconds in late.values()), late
    # Every level paged once: a page Slack accepted is not sent again.
    counts = [len(slack.channel_messages(dm(user))) for user in team]
    assert counts == [1, 1, 1], counts


LEVEL_S = 3


def dm(user: str) -> str:
    return "D" + user[1:]


def paged(slack: SlackFake, team: list[str]) -> dict[str, float]:
    """When each of the team was first paged (ApiCall.at), for those paged so far."""
    first: dict[str, float] = {}
    for call in slack.calls_to("chat.postMessage"):
        for user in team:
            if call.args.get("channel") == dm(user) and call.error is None:
                first.setdefault(user, call.at)
    return {user: first[user] for user in team if user in first}
