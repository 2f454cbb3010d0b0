"""/oncall and rotations end to end: the real bot in HTTP mode, signed requests, the Slack fake.

A rotation's hand-off is a time in the config, so the tests write one a few seconds ahead (or
an hour behind) of the moment the bot starts; every wait is on a condition (a message reaching
the fake, a row in the database).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.runbook.incidents.escalation import SYNC_TIMER
from bot.runbook.oncall.handoffs import HANDOFF_TIMER
from bot.store import Store
from tests.conftest import TEST_LIMITS, BotProcess, Sent, new_channel, start_slack_bot, stop_process
from tests.support.incident_messages import actions_block_id, shown
from tests.support.slack_fake import ApiCall, SlackFake, block_kit_errors
from tests.test_escalate_e2e import WALK_TIMEOUT_S, dm, with_channel

LEVEL = "On-call DevOps Engineer"
HANDOFF_AFTER_S = 25  # from writing the config; the machine is shared and may be slow


@dataclass(frozen=True)
class Rota:
    """People only this test's bot pages: user ids ending in the test's own tag."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6].upper())

    def __post_init__(self) -> None:
        for name in ("alice", "bob", "carol", "olga", "approver", "deployer", "opener"):
            object.__setattr__(self, name, f"U0{name.upper()}{self.tag}")

    alice: str = field(init=False)
    bob: str = field(init=False)
    carol: str = field(init=False)
    olga: str = field(init=False)
    approver: str = field(init=False)
    deployer: str = field(init=False)
    opener: str = field(init=False)


def write_config(path: Path, rota: Rota, channel: str, handoff: datetime, members: int) -> Path:
    names = [rota.alice, rota.bob, rota.carol][:members]
    rotation = {"members": names, "every": "1d", "handoff": handoff.isoformat()}
    config = {
        "slack": {"incidents_channel": channel},
        "access": {"approvers": [rota.approver], "deployers": [rota.deployer]},
        "environments": {"local": {"base_url": "http://127.0.0.1:1", "transport": "local"}},
        "alerts": {"repeat_every": "1h", "scheduled_checks": False},
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "escalation": {"levels": [{"name": LEVEL, "rotation": rotation}]},
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class OnCallBot:
    bot: BotProcess
    rota: Rota
    channel: str
    config: Path

    @property
    def slack(self) -> SlackFake:
        return self.bot.slack

    def command(self, command: str, text: str, user_id: str) -> Sent:
        sent = self.bot.command(command, text, user_id=user_id)
        assert sent.response.status_code == 200
        return sent

    def pages(self) -> list[str]:
        """Who was paged, in order: first posts of pages, to this test's people."""
        return [
            "U" + str(call.args["channel"])[1:]
            for call in self.slack.calls_to("chat.postMessage")
            if str(call.args.get("channel", "")).endswith(self.rota.tag)
            and call.error is None
            and str(call.args.get("text", "")).startswith("Paging you for INC-1 ")
        ]

    def wait_pages(self, count: int) -> list[str]:
        return self.slack.wait_for(
            lambda fake: pages if len(pages := self.pages()) >= count else None,
            timeout=WALK_TIMEOUT_S,
        )

    def card(self) -> dict[str, Any]:
        return self.slack.wait_for(
            lambda fake: next(iter(fake.channel_messages(self.channel)), None)
        )

    def press(self, action_id: str, message: dict[str, Any], channel: str, user_id: str) -> None:
        sent = self.bot.press(
            action_id,
            "INC-1",
            channel=channel,
            message_ts=message["ts"],
            user_id=user_id,
            block_id=actions_block_id(message) or "b1",
        )
        assert sent.response.status_code == 200

    def answer(self, starting: str, since: int) -> dict[str, Any]:
        """The private answer (response_url) that starts so, after the first `since` ones."""
        return self.slack.wait_for(
            lambda fake: next(
                (r for r in fake.responses[since:] if r["text"].startswith(starting)), None
            )
        )

    def handoff_dms(self, user: str) -> list[ApiCall]:
        return [
            call
            for call in self.slack.calls_to("chat.postMessage")
            if call.args.get("channel") == dm(user)
            and str(call.args.get("text", "")).startswith(":pager: You are on call")
        ]


class Launcher:
    def __init__(self, tmp_path: Path, slack: SlackFake) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.started: list[BotProcess] = []

    def start(self, handoff: datetime, members: int = 3) -> OnCallBot:
        rota, channel = Rota(), new_channel()
        workdir = self.tmp_path / f"bot-{len(self.started)}"
        workdir.mkdir()
        config = write_config(workdir / "eventmesh.yml", rota, channel, handoff, members)
        bot = start_slack_bot(workdir, self.slack, config)
        self.started.append(bot)
        return OnCallBot(bot, rota, channel, config)

    def restart(self, old: OnCallBot) -> OnCallBot:
        workdir = self.tmp_path / f"bot-{len(self.started)}"
        workdir.mkdir()
        bot = start_slack_bot(workdir, self.slack, old.config, old.bot.database_url)
        self.started.append(bot)
        return OnCallBot(bot, old.rota, old.channel, old.config)

    def stop_all(self) -> None:
        for bot in self.started:
            bot.http.close()
            stop_process(bot.process)


@pytest.fixture
def launch(tmp_path: Path, slack: SlackFake) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, slack)
    yield launcher
    launcher.stop_all()


def wait_in_store(url: str, done: Any) -> None:
    """Until `done(store)` holds: a condition in the database, polled (nothing signals it)."""
    store = Store(url)
    try:
        deadline = time.monotonic() + WALK_TIMEOUT_S
        while not done(store):
            assert time.monotonic() < deadline, "the database never got there"
            time.sleep(0.05)
    finally:
        store.close()


def test_the_member_on_call_is_paged_and_their_override_moves_the_next_page(
    launch: Launcher,
) -> None:
    # Alice's turn began an hour ago (the configured hand-off), and lasts a day.
    esc = launch.start(handoff=datetime.now(UTC) - timedelta(hours=1))
    rota = esc.rota
    esc.command("/escalate", "checkout answers 500 --sev 1", rota.opener)
    assert esc.wait_pages(1) == [rota.alice]

    before = len(esc.slack.responses)
    esc.command("/oncall", "", "U0ANYONE")
    overview = esc.answer("On call now", before)
    assert f"*1 · {LEVEL}* — <@{rota.alice}> until " in shown(overview)
    assert f"→ <@{rota.bob}> · " in shown(overview)
    assert block_kit_errors(overview["blocks"]) == []

    # Carol is in the rotation but not on call, and no deployer or approver: refused, privately.
    refused = esc.command("/oncall", f"override <@{rota.olga}|olga> for 2h", rota.carol)
    reply = refused.response.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == (
        f"Only whoever is on call for level 1, {LEVEL} now (<@{rota.alice}>), deployers and "
        "approvers may override it."
    )

    before = len(esc.slack.responses)
    esc.command("/oncall", f"override <@{rota.olga}|olga> for 2h", rota.alice)
    made = esc.answer(":arrows_counterclockwise:", before)
    assert (
        f"<@{rota.olga}> is on call for level 1, {LEVEL} instead of <@{rota.alice}>"
        in (made["text"])
    )
    esc.slack.wait_for(lambda fake: fake.channel_messages(dm(rota.olga)))

    # Alice asks for the level to be paged again: the page goes to Olga now.
    (page,) = esc.slack.channel_messages(dm(rota.alice))
    esc.press("incident_escalate", with_channel(page, dm(rota.alice)), dm(rota.alice), rota.alice)
    assert esc.wait_pages(2) == [rota.alice, rota.olga]
    olga_page = esc.slack.wait_for(
        lambda fake: next(
            (m for m in fake.channel_messages(dm(rota.olga)) if "Paging you" in m["text"]), None
        )
    )
    # Paged through the override, Olga may acknowledge.
    esc.press("incident_ack", with_channel(olga_page, dm(rota.olga)), dm(rota.olga), rota.olga)
    esc.slack.wait_for(lambda fake: "INC-1 · SEV 1 · Acknowledged" in shown(esc.card()))
    assert f"Acknowledged by <@{rota.olga}>" in shown(esc.card())


def test_a_hand_off_during_an_open_incident_across_a_restart(launch: Launcher) -> None:
    # Bob's turn (the one before the configured hand-off) until `handoff`, then Alice's. The
    # bot must start and open the incident before it: on a loaded machine that takes seconds.
    handoff = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=HANDOFF_AFTER_S)
    esc = launch.start(handoff=handoff, members=2)
    rota = esc.rota
    esc.command("/escalate", "payments queue stuck", rota.opener)
    assert esc.wait_pages(1) == [rota.bob], "the incident opened after the hand-off"
    url = esc.bot.database_url
    # Kill it once the hand-off's timer is set and the opening is posted (no half-done post).
    wait_in_store(
        url,
        lambda store: store.pending_timers(HANDOFF_TIMER) and not store.pending_timers(SYNC_TIMER),
    )
    esc.bot.process.send_signal(signal.SIGKILL)
    esc.bot.process.wait()

    # Restarted at once: the hand-off falls due while it starts, or after — told once either way.
    restarted = launch.restart(esc)
    (told,) = restarted.slack.wait_for(
        lambda fake: restarted.handoff_dms(rota.alice) or None,
        timeout=HANDOFF_AFTER_S + WALK_TIMEOUT_S,
    )
    text = str(told.args["text"])
    assert text.startswith(f":pager: You are on call for level 1, {LEVEL} from ")
    assert f"taking over from <@{rota.bob}>" in text
    assert "*INC-1* · SEV 2 · payments queue stuck" in shown({"blocks": told.args["blocks"]})
    line = restarted.slack.wait_for(
        lambda fake: next(
            (m for m in fake.channel_messages(esc.channel) if "hand-off" in m["text"]), None
        )
    )
    assert f"<@{rota.alice}> takes over from <@{rota.bob}>" in line["text"]

    # The next change of level pages the new person: Bob asks for it to be paged again.
    (page,) = restarted.slack.channel_messages(dm(rota.bob))
    restarted.press("incident_escalate", with_channel(page, dm(rota.bob)), dm(rota.bob), rota.bob)
    assert restarted.wait_pages(2) == [rota.bob, rota.alice]
    assert len(restarted.handoff_dms(rota.alice)) == 1
    lines = [m for m in restarted.slack.channel_messages(esc.channel) if "hand-off" in m["text"]]
    assert len(lines) == 1
    # The next hand-off (a day on) has its timer, once.
    store = Store(url)
    try:
        (following,) = store.pending_timers(HANDOFF_TIMER)
        assert following.due_at == handoff + timedelta(days=1)
    finally:
        store.close()
