"""Incidents in Slack, in process: the real Web API chat against the Slack fake, the real
scheduler and store, and a clock the test moves — every step without waiting for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config
from bot.runbook.incidents.escalation import DEADLINE_TIMER, SYNC_TIMER, Action
from bot.scheduler import Scheduler
from bot.slack.incidents.incidents import Incidents, PressReply
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import Incident, Store
from tests.conftest import BOT_TOKEN, EXAMPLE_CONFIG, new_channel
from tests.support.clock import ManualClock
from tests.support.incident_messages import actions_block_id, buttons, shown
from tests.support.slack_fake import SlackFake, block_kit_errors

ONCALL, LEAD, MANAGER = "D0ONCALL", "D0LEAD", "D0MANAGER"


class World:
    """One bot's incident machinery, swept by hand."""

    def __init__(self, tmp_path: Path, slack: SlackFake, config: Config) -> None:
        self.slack = slack
        self.clock = ManualClock()
        self.config = config
        self.channel = config.slack.incidents_channel
        self.store = Store(f"sqlite:///{tmp_path / 'bot.db'}", clock=self.clock)
        self.chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        self.scheduler, self.incidents = self.start_bot()

    def start_bot(self) -> tuple[Scheduler, Incidents]:
        """A bot process's share: its own scheduler (owner) and incidents, on the same store."""
        scheduler = Scheduler(self.store, clock=self.clock)
        incidents = Incidents(self.config, self.store, self.chat, scheduler, clock=self.clock)
        scheduler.on(DEADLINE_TIMER, incidents.on_deadline_timer)
        scheduler.on(SYNC_TIMER, incidents.on_sync_timer)
        return scheduler, incidents

    async def settle(self) -> None:
        """Fire every timer due now, and those they set due now, until none is left."""
        while await self.scheduler.sweep():
            await self.scheduler.settle()

    async def later(self, **delta: float) -> None:
        self.clock.advance(**delta)
        await self.settle()

    async def open(self, summary: str = "api 5xx spike", **kwargs: Any) -> Incident:
        incident, created = await self.incidents.open_incident(
            summary, 2, "/escalate", opened_by="U0USER", channel="C0TYPED", **kwargs
        )
        assert created
        await self.settle()
        return incident

    async def press(
        self, action: Action, user: str, message: dict[str, Any], value: str = "INC-1"
    ) -> PressReply:
        """Press a button of a message as the fake holds it (its block_id included)."""
        reply = await self.incidents.press(action, value, actions_block_id(message), user)
        await self.settle()
        return reply

    def card(self) -> dict[str, Any]:
        assert self.channel is not None
        cards = [m for m in self.slack.channel_messages(self.channel) if "thread_ts" not in m]
        assert len(cards) == 1, cards
        return cards[0]

    def thread(self) -> list[str]:
        assert self.channel is not None
        # The thread's lines; a file shared there (the post-mortem draft) is not one.
        return [
            m["text"]
            for m in self.slack.channel_messages(self.channel)
            if "thread_ts" in m and not m.get("files")
        ]

    def dms(self, channel: str) -> list[dict[str, Any]]:
        return self.slack.channel_messages(channel)


def scenario(
    tmp_path: Path,
    slack: SlackFake,
    body: Callable[[World], Awaitable[None]],
) -> None:
    slack.reset()
    config = load_config(EXAMPLE_CONFIG)
    channels = config.slack.model_copy(update={"incidents_channel": new_channel()})
    config = config.model_copy(update={"slack": channels})

    async def run() -> None:
        world = World(tmp_path, slack, config)
        try:
            await body(world)
        finally:
            world.store.close()

    asyncio.run(run())
    assert slack.rejected == []


def test_opening_posts_the_card_and_pages_level_one_once(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        await w.open()
        card = w.card()
        assert block_kit_errors(card["blocks"]) == []
        text = shown(card)
        assert "INC-1 · SEV 2 · Triggered" in text
        assert "Paging level 1 of 4, On-call DevOps Engineer" in text
        assert "DevOps Team Lead paged at 12:10:00 UTC unless someone acknowledges" in text
        # The plan up front: who is paged when, and after the last level.
        for line in (
            "▶ +0 *On-call DevOps Engineer* — <@U0ONCALL>",
            "· +10 min DevOps Team Lead — 1 person",
            "· +25 min Engineering Manager — 1 person",
            "· +55 min CTO — 1 person",
            "Then CTO again every 1 h until someone acknowledges.",
        ):
            assert line in text
        assert "<@U0LEAD>" not in json.dumps(card)  # not pinged before their turn
        assert buttons(card) == ["Acknowledge", "Escalate", "Resolve", "Runbook"]
        assert actions_block_id(card) == "incident:INC-1:1"
        (page,) = w.dms(ONCALL)
        assert page["text"].startswith("Paging you for INC-1 (SEV 2, On-call DevOps Engineer)")
        assert page["blocks"] == card["blocks"]
        assert w.dms(LEAD) == [] and w.thread() == []
        calls = len(w.slack.calls)
        await w.settle()
        await w.later(minutes=9, seconds=59)
        assert len(w.slack.calls) == calls  # nothing more until the deadline

    scenario(tmp_path, slack, body)


def test_a_passed_deadline_pages_the_next_level_and_updates_every_copy(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.open()
        await w.later(minutes=10)
        (page,) = w.dms(LEAD)
        card = w.card()
        assert "Paging level 2 of 4, DevOps Team Lead" in shown(card)
        assert "✓ +0 On-call DevOps Engineer — <@U0ONCALL>" in shown(card)
        assert "▶ +10 min *DevOps Team Lead* — <@U0LEAD>" in shown(card)
        (first_page,) = w.dms(ONCALL)  # updated in place, not posted again
        assert first_page["blocks"] == card["blocks"] == page["blocks"]
        assert actions_block_id(card) == "incident:INC-1:2"
        assert w.thread() == [
            ":arrow_double_up: No acknowledgement within 10 min — paging level 2, "
            "DevOps Team Lead: <@U0LEAD>"
        ]
        thread_line = [m for m in w.slack.channel_messages(w.channel or "") if "thread_ts" in m]
        assert thread_line[0]["thread_ts"] == card["ts"]

    scenario(tmp_path, slack, body)


def test_buttons_work_from_any_copy_and_every_copy_follows(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.open()
        (level_one,) = w.dms(ONCALL)
        assert (await w.press(Action.ESCALATE, "U0ONCALL", level_one)).answer is None
        (level_two,) = w.dms(LEAD)
        assert (await w.press(Action.ESCALATE, "U0LEAD", level_two)).answer is None
        (level_three,) = w.dms(MANAGER)
        assert "Paging level 3 of 4" in shown(level_three)
        w.clock.advance(minutes=7)
        assert (await w.press(Action.RESOLVE, "U0MANAGER", w.card())).answer is None

        card = w.card()
        copies = [card, *w.dms(ONCALL), *w.dms(LEAD), *w.dms(MANAGER)]
        assert len(copies) == 4
        for copy in copies:
            assert buttons(copy) == []  # nobody is left with a live button
            assert copy["blocks"] == card["blocks"]
        text = shown(card)
        assert "INC-1 · SEV 2 · Resolved" in text
        assert "Resolved by <@U0MANAGER> at 12:07:00 UTC" in text
        assert "*Time to acknowledge*\nnever acknowledged" in text
        assert "*Time to resolve*\n7 min" in text
        assert w.thread() == [
            ":arrow_double_up: <@U0ONCALL> escalated — paging level 2, DevOps Team Lead: <@U0LEAD>",
            ":arrow_double_up: <@U0LEAD> escalated — paging level 3, Engineering Manager: "
            "<@U0MANAGER>",
            ":white_check_mark: Resolved by <@U0MANAGER> — time to acknowledge never "
            "acknowledged · time to resolve 7 min",
        ]
        # The first page's Acknowledge, pressed late: stale, answered privately.
        calls = len(w.slack.calls)
        late = await w.press(Action.ACKNOWLEDGE, "U0ONCALL", level_one)
        assert late.answer is not None and "Nothing changed" in late.answer.text
        assert "resolved by <@U0MANAGER>" in late.answer.text
        assert len(w.slack.calls) == calls

    scenario(tmp_path, slack, body)


def test_acknowledged_then_reminded_snoozed_and_reopened(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        await w.open()
        await w.later(minutes=10)
        (page,) = w.dms(LEAD)
        await w.later(minutes=2)
        assert (await w.press(Action.ACKNOWLEDGE, "U0LEAD", page)).answer is None
        card = w.card()
        assert "Acknowledged by <@U0LEAD> at 12:12:00 UTC (level 2 of 4" in shown(card)
        assert "Reminder to <@U0LEAD> at 12:42:00 UTC if not resolved" in shown(card)
        assert buttons(card) == ["Escalate", "Resolve", "Runbook"]
        await w.later(minutes=30)  # past the next levels' deadlines: nobody else is paged
        assert [len(w.dms(d)) for d in (ONCALL, MANAGER, "D0CTO")] == [1, 0, 0]

        pages_and_reminder = w.dms(LEAD)
        assert len(pages_and_reminder) == 2
        reminder = pages_and_reminder[1]
        assert buttons(reminder) == ["Resolve", "Still working"]
        assert "you acknowledged it 30 min ago. Is it resolved?" in shown(reminder)
        assert (await w.press(Action.SNOOZE, "U0LEAD", reminder)).answer is None
        assert buttons(w.dms(LEAD)[1]) == []  # the answered reminder has no live buttons
        assert "next reminder in 30 min" in w.thread()[-1]

        await w.later(minutes=30)  # the second reminder, left unanswered
        assert len(w.dms(LEAD)) == 3
        await w.later(minutes=15)
        lead = w.dms(LEAD)
        assert len(lead) == 4  # paged again: the re-open is at the acknowledged level
        assert lead[3]["text"].startswith("Paging you for INC-1")
        assert "Paging level 2 of 4, DevOps Team Lead" in shown(w.card())
        assert buttons(lead[2]) == []
        assert w.thread()[-2:] == [
            ":alarm_clock: Acknowledged 30 min ago and not resolved — asked <@U0LEAD> "
            "whether it is resolved",
            ":leftwards_arrow_with_hook: No answer from <@U0LEAD> within 15 min — re-opened "
            "at level 2, DevOps Team Lead: <@U0LEAD>",
        ]

    scenario(tmp_path, slack, body)


def test_a_post_slack_refuses_for_now_is_retried_and_nothing_is_sent_twice(
    tmp_path: Path, slack: SlackFake, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(w: World) -> None:
        w.slack.fail_next("chat.postMessage", "fatal_error")  # the card's post
        with caplog.at_level(logging.ERROR):
            await w.open()
        assert "trying again in 5s" in caplog.text
        assert w.channel is not None and w.slack.channel_messages(w.channel) == []
        assert len(w.dms(ONCALL)) == 1  # the page did not wait for the channel
        await w.later(seconds=5)
        card = w.card()
        assert "Paging level 1 of 4" in shown(card)
        assert len(w.dms(ONCALL)) == 1
        assert w.store.pending_timers(SYNC_TIMER) == []

    scenario(tmp_path, slack, body)


def test_a_page_slack_refuses_for_good_is_noted_and_not_retried(
    tmp_path: Path, slack: SlackFake, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(w: World) -> None:
        w.slack.fail_next("conversations.open", "user_not_found")
        with caplog.at_level(logging.ERROR):
            await w.open()
        assert "check the user ids in escalation.levels" in caplog.text
        assert w.dms(ONCALL) == []
        assert w.thread() == [
            ":memo: Could not send the page to U0ONCALL: Slack answered user_not_found."
        ]
        assert w.store.pending_timers(SYNC_TIMER) == []
        # The escalation goes on: the next level is paged at its time.
        await w.later(minutes=10)
        assert len(w.dms(LEAD)) == 1

    scenario(tmp_path, slack, body)


def test_a_restarted_bot_posts_nothing_already_posted(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        incident = await w.open()
        await w.later(minutes=10)
        calls = len(w.slack.calls)
        _, restarted = w.start_bot()
        await restarted.sync(incident.id)
        assert len(w.slack.calls) == calls

    scenario(tmp_path, slack, body)


def test_mentions_in_a_summary_ping_nobody(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        await w.open("<!channel> db down, ask <@U0CTO> in <#C0OPS> & <!here>")
        sent = json.dumps([c.args for c in w.slack.calls_to("chat.postMessage")])
        for mention in ("<!channel>", "<@U0CTO>", "<#C0OPS>", "<!here>"):
            assert mention not in sent
        assert "&lt;!channel&gt; db down, ask &lt;@U0CTO&gt;" in shown(w.card())

    scenario(tmp_path, slack, body)


def test_people_not_paged_are_refused_privately(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        await w.open()
        calls = len(w.slack.calls)
        refused = await w.press(Action.RESOLVE, "U0STRANGER", w.card())
        assert refused.denied and refused.answer is not None
        assert "Only the people paged for INC-1, or approvers" in refused.answer.text
        approver = await w.press(Action.ACKNOWLEDGE, "U0APPROVER1", w.card())
        assert approver.answer is None and not approver.denied
        assert len(w.slack.calls) > calls
        missing = await w.press(Action.RESOLVE, "U0ONCALL", w.card(), value="INC-99")
        assert missing.answer is not None and "no incident INC-99" in missing.answer.text

    scenario(tmp_path, slack, body)


def test_status_lists_open_incidents_with_level_age_and_acknowledger(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.open("api 5xx spike")
        await w.open("disk full on prod-2")
        await w.later(minutes=12)
        (page,) = [m for m in w.dms(LEAD) if "INC-2" in m["text"]]
        await w.press(Action.ACKNOWLEDGE, "U0LEAD", page, value="INC-2")
        status = await w.incidents.status()
        text = shown({"text": status.text, "blocks": status.blocks})
        assert "2 open incidents" in text
        assert "*INC-1* · SEV 2 · api 5xx spike — paging level 2 of 4" in text
        assert "open 12 min" in text
        assert "*INC-2* · SEV 2 · disk full on prod-2 — acknowledged by <@U0LEAD>" in text

    scenario(tmp_path, slack, body)


def test_while_another_bot_posts_about_an_incident_this_one_waits_its_turn(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        incident, _ = await w.incidents.open_incident("api 5xx spike", 1, "alert")
        # Another replica took the incident's posting lease and died.
        w.store.lease_incident_sync(incident.id, "other-bot", w.clock(), timedelta(minutes=2))
        await w.settle()
        assert w.slack.calls_to("chat.postMessage") == []
        await w.later(seconds=30)
        assert w.slack.calls_to("chat.postMessage") == []  # still its lease
        await w.later(minutes=2)
        assert "INC-1 · SEV 1 · Triggered" in shown(w.card())
        assert len(w.dms(ONCALL)) == 1

    scenario(tmp_path, slack, body)
