"""The App Home in process: the real store (SQLite and PostgreSQL), the commit watcher, the view
of hundreds of environments, and refresh rounds of two replicas on a clock the test moves,
publishing through the Web API chat to the Slack fake."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Access, Config
from bot.runbook.alerts.states import Metric
from bot.runbook.home.home import (
    DEBOUNCE,
    PUBLISHES_PER_MINUTE,
    RECENT,
    HomeState,
    Overview,
    may_acknowledge,
    refresh_interval,
)
from bot.runbook.incidents.escalation import Action, EscalationPlan, Escalations
from bot.runbook.oncall.oncall import OnCall
from bot.scheduler import Scheduler
from bot.slack.home.home import HomeDesk
from bot.slack.home.home_blocks import MAX_VIEW_BLOCKS, digest, home_view
from bot.slack.oncall.oncall import OnCallDesk
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import AlertWrite, HealthCheck, Incident, Store
from bot.store.commits import watch_commits
from bot.store.home import HomeStore
from bot.store.oncall import OnCallStore
from tests.conftest import BOT_TOKEN
from tests.support.clock import START, ManualClock
from tests.support.incident_messages import shown
from tests.support.slack_fake import MAX_VIEW_BYTES, SlackFake, block_kit_errors

ONCALL, APPROVER, ASKER, STRANGER = "U0ONCALL", "U0APPROVER", "U0ASKER", "U0STRANGER"
ACCESS = Access(approvers=[APPROVER], deployers=[ASKER])
LEVEL = "On-call DevOps Engineer"


def config(environments: list[str], levels: list[dict[str, Any]] | None = None) -> Config:
    return Config.model_validate(
        {
            "access": {"approvers": [APPROVER], "deployers": [ASKER]},
            "environments": {
                name: {"base_url": "http://127.0.0.1:1", "transport": "local"}
                for name in environments
            },
            "alerts": {"scheduled_checks": False},
            "escalation": {"levels": levels or [{"name": LEVEL, "users": [ONCALL]}]},
        }
    )


def plan_of_config(cfg: Config) -> EscalationPlan:
    return EscalationPlan.from_config(cfg.escalation, cfg.alerts)


# --- pacing ------------------------------------------------------------------------------------


def test_the_refresh_interval_keeps_every_viewer_within_views_publish_tier_4() -> None:
    assert refresh_interval(1) == DEBOUNCE == timedelta(seconds=5)
    assert refresh_interval(50) == timedelta(seconds=30)
    for viewers in (1, 8, 9, 50, 100, 1000):
        per_minute = viewers * timedelta(minutes=1) / refresh_interval(viewers)
        assert per_minute <= PUBLISHES_PER_MINUTE, viewers


# --- the commit watcher ------------------------------------------------------------------------


def test_a_commit_that_wrote_a_watched_table_is_told_after_it_committed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    other = Store(f"sqlite:///{tmp_path / 'b.db'}")
    told: list[tuple[frozenset[str], bool]] = []

    def watcher(tables: frozenset[str]) -> None:
        # Read on another connection: the change is committed by the time we are told.
        told.append((tables, store.environment_lock("staging") is not None))

    unwatch = watch_commits(store.engine, ["environment_locks", "incidents"], watcher)
    try:
        store.acquire_manual_lock("staging", "U1", "freeze", None)
        assert told == [(frozenset({"environment_locks"}), True)]
        store.environment_locks()  # a read
        store.acquire_manual_lock("staging", "U2", "again", None)  # refused: rolled back
        store.record_health_check(
            environment="staging",
            health="Healthy",
            status_code=200,
            latency_ms=1.0,
            version="1.0",
            reason="",
            checked_at=START,
        )  # a table nobody here watches
        other.acquire_manual_lock("staging", "U1", "elsewhere", None)  # another engine
        assert len(told) == 1
        lock = store.environment_lock("staging")
        assert lock is not None and store.release_lock("staging", lock.token)
        assert told[1] == (frozenset({"environment_locks"}), False)
    finally:
        unwatch()
    store.acquire_manual_lock("staging", "U1", "unwatched", None)
    assert len(told) == 2
    store.close()
    other.close()


# --- the viewers' rows: one publish per interval, whichever replica -----------------------------


def test_two_replicas_claim_a_viewers_publish_once_per_interval(store_url: str) -> None:
    clock = ManualClock()
    replicas = [HomeStore(Store(store_url, clock=clock)) for _ in range(2)]
    one, two = replicas
    since = clock() - RECENT
    interval = refresh_interval(1)

    one.opened("U1", clock())
    assert one.mark_changed(since) == 1
    (waiting,) = two.waiting(since)
    assert waiting.unseen_changes == 1 and waiting.published_at is None
    assert [r.claim_publish(waiting, "d1", clock(), interval) for r in replicas] == [True, False]
    assert one.waiting(since) == []

    one.mark_changed(since)
    (waiting,) = one.waiting(since)
    one.mark_changed(since)  # a change while the view is drawn: it stays to be shown
    clock.advance(seconds=4)
    assert not two.claim_publish(waiting, "d2", clock(), interval)  # within the interval
    clock.advance(seconds=1)
    assert two.claim_publish(waiting, "d2", clock(), interval)
    (still,) = one.waiting(since)
    assert still.unseen_changes == 1 and still.view_digest == "d2"

    one.unchanged([still])  # drawn again, came out as published: nothing waits
    assert one.waiting(since) == []
    one.mark_changed(since)
    two.not_published("U1")  # Slack refused a publish: waits again, digest forgotten
    (refused,) = one.waiting(since)
    assert refused.unseen_changes == 2 and refused.view_digest is None

    clock.advance(hours=25)
    assert one.mark_changed(clock() - RECENT) == 0  # not a recent viewer any more
    assert one.forget_before(clock() - RECENT) == 1
    assert one.viewer("U1") is None


def test_the_store_reads_latest_health_and_version_and_pending_approvals(store_url: str) -> None:
    clock = ManualClock()
    store = Store(store_url, clock=clock)
    home = HomeStore(store)

    def check(env: str, health: str, version: str | None) -> HealthCheck:
        return HealthCheck(env, health, 200, 1.0, version, "", clock())

    store.record_health_checks([check("a", "Healthy", "1.0"), check("b", "Healthy", "2.0")])
    store.record_health_checks([check("a", "Unhealthy", None), check("b", "Degraded", "2.1")])
    read = home.environment_health()
    assert (read["a"].health, read["a"].version) == ("Unhealthy", "1.0")
    assert (read["b"].health, read["b"].version) == ("Degraded", "2.1")

    def ask(env: str, minutes: float) -> int:
        return store.create_approval(
            kind="deploy",
            environment=env,
            requested_by=ASKER,
            payload={"version": "2.2"},
            expires_at=clock() + timedelta(minutes=minutes),
        ).id

    waiting, decided, expiring = ask("a", 30), ask("b", 30), ask("a", 1)
    assert store.decide_approval(decided, "approved", APPROVER)
    clock.advance(minutes=2)
    assert [a.id for a in home.pending_approvals()] == [waiting]
    assert expiring != waiting
    store.close()


# --- the view ----------------------------------------------------------------------------------


def build_estate(tmp_path: Path, clock: ManualClock) -> tuple[Store, Overview, list[Incident]]:
    """300 environments: 5 Unhealthy, 3 Degraded, 4 locked, 2 alerting, 6 never checked, the
    rest Healthy; 30 incidents (the last 3 acknowledged), 12 requests by ASKER, 40 alerts."""
    names = [f"env-{n:03d}" for n in range(300)]
    store = Store(f"sqlite:///{tmp_path / 'estate.db'}", clock=clock)
    classes = {n: "Unhealthy" for n in names[100:105]} | {n: "Degraded" for n in names[200:203]}
    store.record_health_checks(
        [
            HealthCheck(name, classes.get(name, "Healthy"), 200, 5.0, "3.1.4", "", clock())
            for name in names[:-6]
        ]
    )
    for name in names[10:14]:
        store.acquire_manual_lock(name, ASKER, "freeze", None)
    alerting = [names[20], names[21], *(f"gone-{n}" for n in range(38))]
    store.save_alert_states(
        [],
        [
            AlertWrite(
                env,
                Metric.ERROR_RATE.value,
                None,
                {
                    "status": "firing",
                    "level": "Critical",
                    "peak_level": "Critical",
                    "opened_at": clock(),
                    "level_since": clock(),
                },
            )
            for env in alerting
        ],
    )
    escalations = Escalations(store, clock=clock)
    plan = plan_of_config(config(names))

    async def incidents() -> list[Incident]:
        opened = [
            (await escalations.open(f"trouble number {n}", 2, "/escalate", plan))[0]
            for n in range(30)
        ]
        for incident in opened[-3:]:
            await escalations.press(
                incident.id, Action.ACKNOWLEDGE, ONCALL, seen_seq=None, approvers=[]
            )
        return opened

    opened = asyncio.run(incidents())
    for n in range(12):
        store.create_approval(
            kind="deploy",
            environment=names[n],
            requested_by=ASKER,
            payload={"version": f"3.2.{n}"},
            expires_at=clock() + timedelta(hours=1),
        )
    on_call = OnCall(OnCallStore(store), clock=clock)
    return store, Overview(names, store, HomeStore(store), on_call, clock=clock), opened


def text(blocks: list[dict[str, Any]]) -> str:
    return shown({"text": "", "blocks": blocks})


def acknowledge_buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["block_id"] for b in blocks if b.get("accessory", {}).get("text")]


def test_the_home_of_hundreds_of_environments_fits_and_puts_trouble_first(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    store, overview, incidents = build_estate(tmp_path, clock)
    state: HomeState = asyncio.run(overview.read())
    views = {who: home_view(state, [], who, ACCESS) for who in (ONCALL, APPROVER, ASKER, STRANGER)}
    for who, blocks in views.items():
        assert len(blocks) <= MAX_VIEW_BLOCKS, who
        assert block_kit_errors(blocks, MAX_VIEW_BLOCKS) == [], who
        assert len(json.dumps({"type": "home", "blocks": blocks})) < MAX_VIEW_BYTES, who

    shown_text = text(views[STRANGER])
    lines = shown_text.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if f"*{n}* — " in line)
        for n in ("env-100", "env-200", "env-010", "env-020", "env-294")
    ]
    assert order == sorted(order)  # Unhealthy, Degraded, locked, alerting, never checked
    assert "*env-100* — Unhealthy · `3.1.4`" in shown_text
    assert ":lock: held by hand by <@U0ASKER>" in shown_text
    assert "*env-020* — Healthy · `3.1.4` · :bell: 1 firing alert" in shown_text
    assert "*env-299* — not checked yet" in shown_text
    assert "*Environments* (300)" in shown_text
    assert re.search(r"… and 240 more: 240 Healthy with no lock and no alert", shown_text)
    assert "*Open incidents* (30)" in shown_text and "… and 5 more" in shown_text
    assert "*Firing alerts* (40)" in shown_text and "… and 10 more" in shown_text

    # Acknowledge: for the people paged and approvers, on the incidents not yet acknowledged.
    triggered = {f"incident:INC-{i.id}:1" for i in incidents[:-3]}
    for who in (ONCALL, APPROVER):
        buttons = acknowledge_buttons(views[who])
        assert len(buttons) == 25 and set(buttons) <= triggered, who
    assert acknowledge_buttons(views[STRANGER]) == acknowledge_buttons(views[ASKER]) == []
    # Approvals: an approver sees what to decide, the asker their own, others nothing.
    assert "*Waiting for your decision* (12)" in text(views[APPROVER])
    assert "*Your requests, waiting for an approver* (12)" in text(views[ASKER])
    assert "Waiting for your decision" not in text(views[ASKER])
    assert "approver" not in shown_text
    # Nothing in it depends on when it is drawn: the same state draws the same digest.
    again = home_view(asyncio.run(overview.read()), [], STRANGER, ACCESS)
    assert digest(again) == digest(views[STRANGER])
    store.close()


def test_an_incident_may_be_acknowledged_by_whoever_its_rotation_put_on_call(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    rotation = {"members": ["U0ALICE", "U0BOB"], "every": "1d", "handoff": START.isoformat()}
    cfg = config(["local"], [{"name": LEVEL, "rotation": rotation}])
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}", clock=clock)
    on_call = OnCall(OnCallStore(store), clock=clock)
    overview = Overview(["local"], store, HomeStore(store), on_call, clock=clock)

    async def scenario() -> None:
        escalations = Escalations(store, clock=clock)
        await escalations.open("db down", 1, "/escalate", plan_of_config(cfg))
        clock.advance(hours=1)
        level = plan_of_config(cfg).levels[0]
        await on_call.override(level, "U0OLGA", clock() + timedelta(hours=1), by="U0ALICE")
        state = await overview.read()
        (shown_incident,) = state.incidents
        who = {
            u: may_acknowledge(shown_incident, u, state, ACCESS)
            for u in ("U0ALICE", "U0OLGA", "U0BOB", APPROVER, STRANGER)
        }
        assert who == {
            "U0ALICE": True,
            "U0OLGA": True,
            "U0BOB": False,
            APPROVER: True,
            STRANGER: False,
        }

    asyncio.run(scenario())
    store.close()


# --- refresh rounds, two replicas, a clock the test moves ---------------------------------------


def test_refresh_rounds_of_two_replicas_publish_a_viewers_home_once_per_interval(
    store_url: str, slack: SlackFake
) -> None:
    slack.reset()
    clock = ManualClock()
    cfg = config(["local", "staging"])
    viewer = "U0HOMEVIEWER"

    async def scenario() -> None:
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        stores = [Store(store_url, clock=clock) for _ in range(2)]
        desks = []
        for store in stores:
            oncall = OnCallDesk(cfg, store, chat, Scheduler(store, clock=clock), clock=clock)
            desk = HomeDesk(cfg, store, chat, oncall, clock=clock)
            await desk.close()  # no commit watching: the test runs the rounds itself
            desks.append(desk)
        one, two = desks
        try:
            assert await one.opened(viewer, showing=False) == "Home published (11 blocks)"
            assert len(slack.home_publishes(viewer)) == 1

            stores[1].acquire_manual_lock("staging", ASKER, "freeze", None)
            two.viewers.mark_changed(clock() - RECENT)  # what replica two's watcher does
            assert await one.refresh() == pytest.approx(5.0)  # published at the open: wait
            assert len(slack.home_publishes(viewer)) == 1
            clock.advance(seconds=5)
            await asyncio.gather(one.refresh(), two.refresh())
            published = slack.home_publishes(viewer)
            assert len(published) == 2  # one of the two replicas claimed it
            assert ":lock: held by hand by <@U0ASKER>" in shown(published[-1].args["view"])

            # A change that leaves the Home as it was: drawn, found equal, not published.
            two.viewers.mark_changed(clock() - RECENT)
            clock.advance(seconds=5)
            assert await one.refresh() is None
            assert len(slack.home_publishes(viewer)) == 2
            assert one.viewers.waiting(clock() - RECENT) == []

            # Opened again while Slack shows the current view: no publish at all.
            assert await two.opened(viewer, showing=True) == "Home shown is current"
            assert len(slack.home_publishes(viewer)) == 2
        finally:
            for store in stores:
                store.close()

    asyncio.run(scenario())


def test_a_hand_off_writes_nothing_and_the_sweep_after_it_refreshes_the_home(
    tmp_path: Path, slack: SlackFake
) -> None:
    slack.reset()
    clock = ManualClock()
    handoff = (START - timedelta(hours=1)).isoformat()  # Alice's turn began an hour ago
    rotation = {"members": ["U0ALICE", "U0BOB"], "every": "1d", "handoff": handoff}
    cfg = config(["local"], [{"name": LEVEL, "rotation": rotation}])
    viewer = "U0HANDOFFVIEWER"

    async def scenario() -> None:
        store = Store(f"sqlite:///{tmp_path / 'bot.db'}", clock=clock)
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        oncall = OnCallDesk(cfg, store, chat, Scheduler(store, clock=clock), clock=clock)
        desk = HomeDesk(cfg, store, chat, oncall, clock=clock)
        try:
            await desk.opened(viewer, showing=False)
            assert f"*1 · {LEVEL}* — <@U0ALICE> until " in shown(slack.home(viewer) or {})
            await desk.sweep()  # before the hand-off: nothing to count, nothing published
            clock.advance(hours=23, seconds=1)
            await desk.sweep()
            text = await asyncio.to_thread(
                slack.wait_for,
                lambda fake: (
                    text if "<@U0BOB> until" in (text := shown(fake.home(viewer) or {})) else None
                ),
            )
            assert f"*1 · {LEVEL}* — <@U0BOB> until " in text
            assert len(slack.home_publishes(viewer)) == 2
        finally:
            await desk.close()
            store.close()

    asyncio.run(scenario())
