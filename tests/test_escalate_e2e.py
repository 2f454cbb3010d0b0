"""/escalate end to end: the real bot process, signed requests, the Slack fake, and escalation
levels of a second or a few, so an incident walks its whole path while the test watches.

Each bot gets people of its own (user ids with a tag), so the DMs a test reads are its own.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pexpect
import pytest
from sqlalchemy import update

from bot.runbook.incidents.escalation import DEADLINE_TIMER, SYNC_TIMER
from bot.store import Store, TimerRecord
from tests.conftest import (
    REPO,
    SIGNING_SECRET,
    TEST_LIMITS,
    BotProcess,
    Sent,
    free_port,
    new_channel,
    start_slack_bot,
    stop_process,
)
from tests.support.incident_messages import actions_block_id, buttons, shown
from tests.support.slack_fake import ApiCall, SlackFake, block_kit_errors
from tests.support.slack_signing import block_actions_body, signed_headers
from tests.test_console import PROMPT, plain, spawn_console

WALK_TIMEOUT_S = 30.0  # generous: the machine is shared; the steps themselves take seconds


def dm(user: str) -> str:
    return "D" + user[1:]


@dataclass
class Team:
    """The runbook's four levels, staffed with people only this test's bot pages."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6].upper())

    @property
    def levels(self) -> list[list[str]]:
        t = self.tag
        return [[f"U0ONCALL{t}"], [f"U0LEAD{t}", f"U0DEPUTY{t}"], [f"U0MANAGER{t}"], [f"U0CTO{t}"]]

    @property
    def everyone(self) -> list[str]:
        return [user for level in self.levels for user in level]


@dataclass
class EscalationBot:
    bot: BotProcess
    team: Team
    channel: str  # the incidents channel
    workdir: Path
    config: Path

    @property
    def slack(self) -> SlackFake:
        return self.bot.slack

    def open(self, text: str, user_id: str = "U0USER") -> Sent:
        sent = self.bot.command("/escalate", text, user_id=user_id)
        assert sent.response.status_code == 200
        return sent

    def cards(self) -> list[dict[str, Any]]:
        return [m for m in self.slack.channel_messages(self.channel) if "thread_ts" not in m]

    def card(self, name: str = "INC-1") -> dict[str, Any]:
        def posted(fake: SlackFake) -> dict[str, Any] | None:
            return next((c for c in self.cards() if c["text"].startswith(f"{name} ")), None)

        return self.slack.wait_for(posted)

    def thread(self) -> list[str]:
        # The thread's lines; a file shared there (the post-mortem draft) is not one.
        return [
            m["text"]
            for m in self.slack.channel_messages(self.channel)
            if "thread_ts" in m and not m.get("files")
        ]

    def pages(self, name: str = "INC-1") -> list[ApiCall]:
        """The pages sent for an incident, in order: posts to this team's DMs."""
        ours = {dm(user) for user in self.team.everyone}
        return [
            call
            for call in self.slack.calls_to("chat.postMessage")
            if call.args.get("channel") in ours
            and call.error is None
            and str(call.args.get("text", "")).startswith(f"Paging you for {name} ")
        ]

    def dms(self, user: str) -> list[dict[str, Any]]:
        return self.slack.channel_messages(dm(user))

    def press(
        self, action_id: str, message: dict[str, Any], user_id: str, value: str = "INC-1"
    ) -> Sent:
        channel = str(message.get("channel") or "")
        sent = self.bot.press(
            action_id,
            value,
            channel=channel,
            message_ts=message["ts"],
            user_id=user_id,
            block_id=actions_block_id(message) or "b1",
        )
        assert sent.response.status_code == 200
        return sent

    def wait_pages(self, count: int, name: str = "INC-1") -> list[ApiCall]:
        def enough(fake: SlackFake) -> list[ApiCall] | None:
            pages = self.pages(name)
            return pages if len(pages) >= count else None

        return self.slack.wait_for(enough, timeout=WALK_TIMEOUT_S)


def with_channel(message: dict[str, Any], channel: str) -> dict[str, Any]:
    return {**message, "channel": channel}


def recipients(pages: list[ApiCall]) -> list[str]:
    return ["U" + str(call.args["channel"])[1:] for call in pages]


def write_config(
    path: Path,
    team: Team,
    channel: str,
    timeouts: tuple[str, str, str],
    repeat_every: str,
    ack_reminder: str = "30m",
    reopen_after: str = "15m",
) -> Path:
    names = ["On-call DevOps Engineer", "DevOps Team Lead", "Engineering Manager", "CTO"]
    levels: list[dict[str, Any]] = [
        {"name": name, "users": users} for name, users in zip(names, team.levels, strict=True)
    ]
    for level, timeout in zip(levels, timeouts, strict=False):
        level["timeout"] = timeout
    config = {
        "slack": {"incidents_channel": channel, "alerts_channel": "C0ALERTS"},
        "access": {"approvers": ["U0APPROVER1"]},
        "environments": {"local": {"base_url": "http://127.0.0.1:1", "transport": "local"}},
        # Only /escalate opens incidents here: no scheduled checks of the dead 'local'.
        "alerts": {"repeat_every": repeat_every, "scheduled_checks": False},
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "escalation": {
            "levels": levels,
            "ack_reminder": ack_reminder,
            "reopen_after": reopen_after,
        },
    }
    path.write_text(json.dumps(config, indent=2))
    return path


class Launcher:
    def __init__(self, tmp_path: Path, slack: SlackFake) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.started: list[BotProcess] = []

    def start(
        self,
        timeouts: tuple[str, str, str] = ("10m", "15m", "30m"),
        repeat_every: str = "1h",
        **reminders: str,
    ) -> EscalationBot:
        team, channel = Team(), new_channel()
        workdir = self.tmp_path / f"bot-{len(self.started)}"
        workdir.mkdir()
        config = write_config(
            workdir / "eventmesh.yml", team, channel, timeouts, repeat_every, **reminders
        )
        bot = start_slack_bot(workdir, self.slack, config)
        self.started.append(bot)
        return EscalationBot(bot, team, channel, workdir, config)

    def restart(self, old: EscalationBot) -> EscalationBot:
        """Another process on the same config and database (a fresh workdir for its log)."""
        workdir = self.tmp_path / f"bot-{len(self.started)}"
        workdir.mkdir()
        bot = start_slack_bot(workdir, self.slack, old.config, old.bot.database_url)
        self.started.append(bot)
        return EscalationBot(bot, old.team, old.channel, workdir, old.config)

    def stop_all(self) -> None:
        for bot in self.started:
            bot.http.close()
            stop_process(bot.process)


@pytest.fixture
def launch(tmp_path: Path, slack: SlackFake) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, slack)
    yield launcher
    launcher.stop_all()


def events(bot: EscalationBot, incident_id: int = 1) -> list[str]:
    store = Store(bot.bot.database_url)
    try:
        return [e.kind for e in store.incident_events(incident_id)]
    finally:
        store.close()


def test_nobody_acknowledges_every_level_is_paged_in_order_then_the_last_again(
    launch: Launcher,
) -> None:
    esc = launch.start(timeouts=("1s", "1s", "1s"), repeat_every="1s")
    esc.open("checkout answers 500 --sev 1")
    pages = esc.wait_pages(6)  # four levels (two people at level 2), then the CTO again
    team = esc.team
    oncall, (lead, deputy), manager, cto = (
        team.levels[0][0],
        team.levels[1],
        team.levels[2][0],
        team.levels[3][0],
    )
    order = recipients(pages[:6])
    assert order[0] == oncall
    assert sorted(order[1:3]) == sorted([lead, deputy])
    assert order[3:6] == [manager, cto, cto]
    # Nobody outside the configured levels was paged, and each page is Block Kit Slack takes.
    assert set(recipients(esc.pages())) <= set(team.everyone)
    assert all(block_kit_errors(p.args["blocks"]) == [] for p in pages)

    card = esc.card()
    assert len(esc.cards()) == 1  # one message, updated in place
    assert "INC-1 · SEV 1 · Triggered" in shown(card)
    thread = esc.thread()
    assert thread[:3] == [
        f":arrow_double_up: No acknowledgement within 1 s — paging level 2, DevOps Team Lead: "
        f"<@{lead}>, <@{deputy}>",
        f":arrow_double_up: No acknowledgement within 1 s — paging level 3, Engineering "
        f"Manager: <@{manager}>",
        f":arrow_double_up: No acknowledgement within 1 s — paging level 4, CTO: <@{cto}>",
    ]
    assert thread[3] == f":repeat: Still not acknowledged — paging again: CTO: <@{cto}>"


def test_acknowledge_at_level_two_stops_it_then_the_reminder_and_the_reopen(
    launch: Launcher,
) -> None:
    esc = launch.start(
        timeouts=("1s", "4s", "1s"), repeat_every="1s", ack_reminder="6s", reopen_after="2s"
    )
    lead, deputy = esc.team.levels[1]
    esc.open("payments queue stuck")
    esc.wait_pages(3)
    (page,) = esc.dms(deputy)
    esc.press("incident_ack", with_channel(page, dm(deputy)), deputy)

    def acknowledged(fake: SlackFake) -> bool:
        return "INC-1 · SEV 2 · Acknowledged" in shown(esc.card())

    esc.slack.wait_for(acknowledged)

    # The reminder comes 6 s after the acknowledgement: past the deadlines of level 2, of
    # level 3 and of the CTO's first page. Nobody past level 2 was paged meanwhile.
    def reminded(fake: SlackFake) -> dict[str, Any] | None:
        messages = esc.dms(deputy)
        return messages[1] if len(messages) > 1 else None

    reminder = esc.slack.wait_for(reminded, timeout=WALK_TIMEOUT_S)
    assert buttons(reminder) == ["Resolve", "Still working"]
    assert "Is it resolved?" in shown(reminder)
    assert len(esc.pages()) == 3
    assert [esc.dms(user) for user in esc.team.levels[2] + esc.team.levels[3]] == [[], []]

    # Nobody answers: 2 s later it re-opens at level 2, and both its people are paged again.
    repaged = esc.wait_pages(5)
    assert sorted(recipients(repaged[3:5])) == sorted([lead, deputy])
    assert ":leftwards_arrow_with_hook: No answer from" in "\n".join(esc.thread())
    assert events(esc)[:5] == ["opened", "escalated", "acknowledged", "reminded", "reopened"]
    esc.press("incident_resolve", with_channel(esc.card(), esc.channel), lead)


def test_escalate_and_resolve_from_the_channel_and_from_a_page_update_every_copy(
    launch: Launcher,
) -> None:
    esc = launch.start()
    oncall, (lead, deputy), manager = (
        esc.team.levels[0][0],
        esc.team.levels[1],
        esc.team.levels[2][0],
    )
    esc.open("search index corrupt")
    esc.wait_pages(1)
    # Escalate from the channel message: level 2 is paged at once.
    esc.press("incident_escalate", with_channel(esc.card(), esc.channel), oncall)
    esc.wait_pages(3)
    # Escalate from a page (the deputy's DM): level 3.
    (page,) = esc.dms(deputy)
    esc.press("incident_escalate", with_channel(page, dm(deputy)), deputy)
    esc.wait_pages(4)

    # Resolve from another page (the lead's DM), once it shows level 3 like the rest.
    def updated(fake: SlackFake) -> dict[str, Any] | None:
        (page,) = esc.dms(lead)
        return page if "Paging level 3 of 4" in shown(page) else None

    page = esc.slack.wait_for(updated)
    esc.press("incident_resolve", with_channel(page, dm(lead)), lead)

    def all_closed(fake: SlackFake) -> list[dict[str, Any]] | None:
        messages = [esc.card(), *(m for u in (oncall, lead, deputy, manager) for m in esc.dms(u))]
        done = all(buttons(m) == [] and "Resolved" in shown(m) for m in messages)
        return messages if done else None

    closed = esc.slack.wait_for(all_closed)
    assert len(closed) == 5  # the channel's message and the four pages, one each
    card = closed[0]
    assert all(m["blocks"] == card["blocks"] for m in closed)
    assert f"Resolved by <@{lead}>" in shown(card)
    assert "*Time to acknowledge*\nnever acknowledged" in shown(card)
    assert "*Time to resolve*" in shown(card)

    # A second incident, resolved from the channel message.
    esc.open("cache hit rate collapsed")
    esc.wait_pages(1, "INC-2")
    second = esc.card("INC-2")
    esc.press("incident_resolve", with_channel(second, esc.channel), oncall, value="INC-2")

    def resolved(fake: SlackFake) -> bool:
        return (
            all("Resolved" in shown(m) for m in [esc.card("INC-2"), esc.dms(oncall)[-1]])
            and buttons(esc.card("INC-2")) == []
        )

    esc.slack.wait_for(resolved)
    assert events(esc, 2) == ["opened", "resolved"]


def test_two_presses_of_acknowledge_give_one_acknowledgement(launch: Launcher) -> None:
    esc = launch.start()
    oncall = esc.team.levels[0][0]
    esc.open("kafka lag growing")
    esc.wait_pages(1)
    (page,) = esc.dms(oncall)
    # The same press delivered twice (one body, one response_url), and an approver pressing
    # the channel's Acknowledge at the same moment.
    response_url = esc.slack.response_url()
    body = block_actions_body(
        "incident_ack",
        "INC-1",
        user_id=oncall,
        channel_id=dm(oncall),
        message_ts=page["ts"],
        response_url=response_url,
        block_id=actions_block_id(page) or "",
    )
    card = esc.card()
    answered_before = len(esc.slack.responses)

    def deliver(n: int) -> int:
        if n < 2:
            response, _ = esc.bot.post_signed(body, signed_headers(SIGNING_SECRET, body))
        else:
            response = esc.press(
                "incident_ack", with_channel(card, esc.channel), "U0APPROVER1"
            ).response
        return response.status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(deliver, range(3))) == [200, 200, 200]

    # Two of the three presses are told, privately, that nothing changed.
    def answered(fake: SlackFake) -> list[dict[str, Any]] | None:
        answers = fake.responses[answered_before:]
        told = [r for r in answers if "INC-1 is acknowledged already" in r["text"]]
        return told if len(told) >= 2 else None

    # Whichever copy a loser pressed, it is told who acknowledged and when.
    for answer in esc.slack.wait_for(answered):
        assert re.search(r"<@U\w+> acknowledged it at \d\d:\d\d:\d\d UTC", answer["text"])

    def acknowledged(fake: SlackFake) -> list[str] | None:
        lines = [line for line in esc.thread() if line.startswith(":eyes: Acknowledged")]
        return lines or None

    esc.slack.wait_for(lambda fake: "INC-1 · SEV 2 · Acknowledged" in shown(esc.card()))
    assert len(esc.slack.wait_for(acknowledged)) == 1
    assert events(esc) == ["opened", "acknowledged"]


def test_acknowledge_on_an_older_copy_of_a_page_acknowledges_and_later_says_who_did(
    launch: Launcher,
) -> None:
    esc = launch.start()
    oncall, (lead, deputy) = esc.team.levels[0][0], esc.team.levels[1]
    esc.open("ledger writes failing")
    esc.wait_pages(1)
    older_page = copy.deepcopy(esc.dms(oncall)[0])  # level 1's page, as first posted
    esc.press("incident_escalate", with_channel(esc.card(), esc.channel), oncall)
    esc.wait_pages(3)
    deputy_page = copy.deepcopy(esc.dms(deputy)[0])  # level 2's page, before anyone acks

    # The on-call engineer answers the page they got first: it still acknowledges.
    answered_before = len(esc.slack.responses)
    esc.press("incident_ack", with_channel(older_page, dm(oncall)), oncall)
    esc.slack.wait_for(lambda fake: "INC-1 · SEV 2 · Acknowledged" in shown(esc.card()))
    assert f"Acknowledged by <@{oncall}>" in shown(esc.card())
    assert events(esc) == ["opened", "escalated", "acknowledged"]

    # The deputy presses the copy they have, made before the acknowledgement: told who and when.
    esc.press("incident_ack", with_channel(deputy_page, dm(deputy)), deputy)

    def told(fake: SlackFake) -> str | None:
        texts = [r["text"] for r in fake.responses[answered_before:]]
        return next((t for t in texts if "INC-1 is acknowledged already" in t), None)

    answer = esc.slack.wait_for(told)
    assert re.search(
        rf"INC-1 is acknowledged already: <@{oncall}> acknowledged it at \d\d:\d\d:\d\d UTC",
        answer,
    ), answer
    assert events(esc) == ["opened", "escalated", "acknowledged"]
    assert lead not in answer


def test_killed_at_level_one_and_restarted_after_the_deadline_pages_level_two_once(
    launch: Launcher,
) -> None:
    esc = launch.start()  # level 1 waits 10 minutes; the test moves that deadline instead
    oncall = esc.team.levels[0][0]
    esc.open("primary database unreachable")
    esc.wait_pages(1)
    card = esc.card()
    store = Store(esc.bot.database_url)
    try:
        # Kill only once the opening step is recorded as done (no half-finished post).
        deadline = time.monotonic() + WALK_TIMEOUT_S
        while store.pending_timers(SYNC_TIMER) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for a condition in the database, not for time
        assert store.pending_timers(SYNC_TIMER) == []
        esc.bot.process.send_signal(signal.SIGKILL)
        esc.bot.process.wait()
        # While the bot is dead the deadline passes: move it into the past.
        (pending,) = store.pending_timers(DEADLINE_TIMER)
        assert pending.payload == {"seq": 1}
        with store.engine.begin() as connection:
            connection.execute(
                update(TimerRecord)
                .where(TimerRecord.id == pending.id)
                .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        store.close()

    before = len(esc.slack.calls)
    restarted = launch.restart(esc)
    lead, deputy = esc.team.levels[1]
    pages = restarted.wait_pages(3)
    assert sorted(recipients(pages[1:])) == sorted([lead, deputy])

    def at_level_two(fake: SlackFake) -> bool:
        return "Paging level 2 of 4" in shown(restarted.card()) and all(
            "Paging level 2 of 4" in shown(m) for m in restarted.dms(oncall)
        )

    restarted.slack.wait_for(at_level_two)
    assert events(restarted) == ["opened", "escalated"]
    assert restarted.cards() == [restarted.card()] and restarted.card()["ts"] == card["ts"]
    since = esc.slack.calls[before:]
    posts = [c.args["channel"] for c in since if c.method == "chat.postMessage"]
    # The restart posted the thread line and level 2's pages, and nothing of level 1 again.
    assert sorted(posts) == sorted([esc.channel, dm(lead), dm(deputy)])
    updates = [c.args["channel"] for c in since if c.method == "chat.update"]
    assert sorted(updates) == sorted([esc.channel, dm(oncall)])
    assert len(restarted.pages()) == 3


def test_a_page_that_fails_to_post_is_retried_and_arrives(launch: Launcher) -> None:
    esc = launch.start()
    oncall = esc.team.levels[0][0]
    # Slack rate-limits opening the DM: the client's own three retries fail too, and the
    # bot's timer tries again a few seconds later.
    for _ in range(4):
        esc.slack.fail_next("conversations.open", "ratelimited", retry_after=0)
    esc.open("login page blank")
    esc.card()  # the channel message does not wait for the page
    (page,) = esc.wait_pages(1)
    assert page.args["channel"] == dm(oncall)
    opens = [c for c in esc.slack.calls_to("conversations.open") if c.args["users"] == oncall]
    assert [c.status for c in opens] == [429, 429, 429, 429, 200]
    assert "Paging level 1 of 4" in shown(esc.card())
    assert len(esc.dms(oncall)) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "needs a summary"),
        ("--sev 2", "needs a summary"),
        ("db down --sev 9", "--sev takes 1, 2 or 3"),
        ("db down --sev", "--sev needs a value"),
        ("db down --sev 1 --sev 2", "Give --sev once"),
        ("db down --page-everyone", "Unknown option"),
        ("x" * 5000, "5,000 characters"),
        ("db down --env nowhere", "Unknown environment"),
        ("db down --env", "--env needs an environment"),
        ("db down --env staging --env production", "Give --env once"),
    ],
    ids=[
        "empty",
        "only-sev",
        "sev-9",
        "sev-no-value",
        "sev-twice",
        "unknown-option",
        "5000",
        "env-unknown",
        "env-no-value",
        "env-twice",
    ],
)
def test_bad_input_gets_the_usage_privately_and_opens_nothing(
    bot: BotProcess, text: str, problem: str
) -> None:
    before = unresolved(bot)
    sent = bot.command("/escalate", text)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert problem in reply["text"] and "Usage" in reply["text"]
    assert "/escalate <summary> [--sev 1|2|3]" in reply["text"]
    assert block_kit_errors(reply["blocks"]) == []
    # A good one afterwards is the barrier: once its message is up, the bad one had its chance.
    # (Its summary is new each time: the same summary would join the incident still open.)
    barrier = bot.command("/escalate", f"barrier incident {uuid.uuid4().hex[:8]}")
    bot.slack.wait_for(lambda fake: fake.channel_messages(barrier.channel))
    assert bot.slack.channel_messages(sent.channel) == []
    assert unresolved(bot) == before + 1


def test_an_incident_keeps_its_environment_and_its_card_shows_it(bot: BotProcess) -> None:
    summary = f"checkout 502s {uuid.uuid4().hex[:8]}"
    sent = bot.command("/escalate", f"{summary} --env Production --sev 1")
    assert sent.response.status_code == 200
    (card,) = bot.slack.wait_for(lambda fake: fake.channel_messages(sent.channel))
    assert "· SEV 1 · production ·" in shown(card)
    assert "*Environment*\nproduction" in shown(card)
    store = Store(bot.database_url)
    try:
        (incident,) = [i for i in store.unresolved_incidents(10_000) if i.summary == summary]
    finally:
        store.close()
    assert incident.environment == "production" and incident.severity == 1


def test_mentions_in_the_summary_ping_nobody(bot: BotProcess) -> None:
    # The shared bot has no escalation levels and no incidents channel: the message goes to
    # the channel /escalate was typed in, and says nobody is paged.
    sent = bot.command("/escalate", "<!channel> api down, ask <@U0CTO> in <#C0OPS> --sev 1")
    assert sent.response.status_code == 200
    (card,) = bot.slack.wait_for(lambda fake: fake.channel_messages(sent.channel))
    posted = json.dumps(card)
    for mention in ("<!channel>", "<@U0CTO>", "<#C0OPS>"):
        assert mention not in posted
    assert "&lt;!channel&gt; api down, ask &lt;@U0CTO&gt;" in shown(card)
    assert "nobody is paged" in shown(card)

    def told(fake: SlackFake) -> dict[str, Any] | None:
        return next((r for r in fake.responses if "but nobody is paged" in r["text"]), None)

    assert "escalation.levels" in bot.slack.wait_for(told)["text"]


def test_status_lists_the_open_incidents(launch: Launcher) -> None:
    esc = launch.start()
    esc.open("api 5xx spike --sev 1")
    # Opened before the next: two commands in flight may take their numbers in either order
    # (under load CI saw the second one get INC-1).
    esc.card("INC-1")
    esc.open("disk 91% on prod-2 --sev 3 --env local")
    esc.wait_pages(1, "INC-2")
    oncall = esc.team.levels[0][0]
    page = next(m for m in esc.dms(oncall) if "INC-2" in m["text"])
    esc.press("incident_ack", with_channel(page, dm(oncall)), oncall, value="INC-2")
    esc.slack.wait_for(lambda fake: "Acknowledged" in shown(esc.card("INC-2")))
    sent = esc.bot.command("/escalate", "status")

    def listed(fake: SlackFake) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in fake.responses
                if r["url"] == sent.response_url and r["text"].startswith("2 open incidents")
            ),
            None,
        )

    answer = shown(esc.slack.wait_for(listed))
    assert sent.response.status_code == 200
    assert "*INC-1* · SEV 1 · api 5xx spike — paging level 1 of 4" in answer
    assert f"*INC-2* · SEV 3 · local · disk 91% on prod-2 — acknowledged by <@{oncall}>" in answer


def test_a_stranger_pressing_is_refused_and_changes_nothing(launch: Launcher) -> None:
    esc = launch.start()
    esc.open("webhooks delayed")
    esc.wait_pages(1)
    esc.press("incident_resolve", with_channel(esc.card(), esc.channel), "U0STRANGER")

    def refused(fake: SlackFake) -> dict[str, Any] | None:
        return next((r for r in fake.responses if "Only the people paged" in r["text"]), None)

    esc.slack.wait_for(refused)
    assert events(esc) == ["opened"]
    assert buttons(esc.card()) == ["Acknowledge", "Escalate", "Resolve", "Runbook"]


def unresolved(bot: BotProcess) -> int:
    store = Store(bot.database_url)
    try:
        return len(store.unresolved_incidents(limit=10_000))
    finally:
        store.close()


def test_the_console_pages_by_dm_and_the_paged_person_acknowledges(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = (REPO / "config" / "eventmesh.yml").read_text()
    (tmp_path / "config" / "eventmesh.yml").write_text(config)
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.sendline("/escalate api 5xx spike --sev 1")
    child.expect_exact("only you can see this")
    child.expect_exact(" in #C0INCIDENTS: paging level 1, On-call DevOps Engineer (@U0ONCALL)")
    child.expect_exact("→ DM @U0ONCALL")
    child.expect(r"\[(\d+)\] Acknowledge")
    button = child.match.group(1)
    page = plain(child.before)
    assert "INC-1 · SEV 1 · Triggered" in page
    assert "+10 min DevOps Team Lead" in page
    child.expect_exact(PROMPT)
    child.sendline("as U0ONCALL")
    child.expect_exact("You are now U0ONCALL.")
    child.sendline(button)
    child.expect_exact("Acknowledged by @U0ONCALL at level 1")
    child.expect_exact("→ DM @U0ONCALL updated")
    child.expect(r"\[\d+\] Escalate")
    assert "INC-1 · SEV 1 · Acknowledged" in plain(child.before)
    child.expect_exact(PROMPT)
    # The channel message was updated in place, so its Escalate button kept its number and
    # now stands for the acknowledged state: pressing it asks the next level for help.
    child.sendline("2")
    child.expect_exact("→ DM @U0LEAD")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
