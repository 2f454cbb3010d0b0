"""The post-mortem draft end to end: the real bot over HTTP, signed commands and presses, the
Slack fake's file upload flow (files.getUploadURLExternal → the bytes → completeUploadExternal).

Escalate, acknowledge, resolve → one Markdown file in the incident's thread with its timeline;
`/escalate postmortem INC-<n>` shares it again; an unknown incident is said so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from bot.slack.incidents import incident_blocks
from tests.conftest import REPO, BotProcess, free_port
from tests.support.incident_messages import actions_block_id, shown
from tests.support.slack_fake import SlackFake
from tests.test_console import PROMPT, spawn_console
from tests.test_escalate_by_name import APPROVER, answer, open_incident
from tests.test_escalate_e2e import Launcher, dm, with_channel


def files_in(slack: SlackFake, channel: str, count: int) -> list[dict[str, Any]]:
    def enough(fake: SlackFake) -> list[dict[str, Any]] | None:
        files = fake.files_in(channel)
        return files if len(files) >= count else None

    return slack.wait_for(enough, timeout=30)


def test_resolving_shares_one_draft_in_the_thread_and_the_command_shares_it_again(
    bot: BotProcess,
) -> None:
    summary = f"checkout latency {uuid.uuid4().hex[:6]}"
    name, channel = open_incident(bot, summary)
    bot.command("/escalate", f"ack {name}", user_id=APPROVER)
    answer(bot.slack, f"{name} acknowledged: its messages show it.")

    def card_of(fake: SlackFake) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in fake.channel_messages(channel)
                if m["text"].startswith(f"{name} ")
                and "thread_ts" not in m
                and "Acknowledged" in str(m.get("blocks"))
            ),
            None,
        )

    card = bot.slack.wait_for(card_of)
    pressed = bot.press(
        incident_blocks.RESOLVE,
        name,
        channel=channel,
        message_ts=card["ts"],
        user_id=APPROVER,
        block_id=actions_block_id(card) or "b1",
    )
    assert pressed.response.status_code == 200

    (draft,) = files_in(bot.slack, channel, 1)
    assert draft["name"] == f"{name}-postmortem.md"
    share = next(m for m in bot.slack.channel_messages(channel) if m.get("files"))
    assert share["thread_ts"] == card["ts"]  # in the incident's thread, not the channel
    markdown = draft["content"].decode()
    assert markdown.startswith(f"# Post-mortem draft: {name} — {summary}")
    timeline = markdown.split("## Timeline\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(" — ", 1)[1] for line in timeline] == [
        "Incident opened, by @U0USER with /escalate",
        f"Acknowledged by @{APPROVER}",
        f"Resolved by @{APPROVER}",
    ]
    assert "- **Time to acknowledge:** " in markdown and f" by @{APPROVER}" in markdown
    assert "- **Time to resolve:** " in markdown

    bot.command("/escalate", f"postmortem {name.lower()}", user_id="U0SOMEONE")
    said = answer(bot.slack, f"The post-mortem draft of {name} is in its thread")
    assert said["response_type"] == "ephemeral"
    files = files_in(bot.slack, channel, 2)
    assert len(files) == 2  # the resolution's draft was not shared twice
    again = files[1]
    assert again["name"].startswith(f"{name}-postmortem-") and again["name"] in said["text"]
    assert "## Timeline" in again["content"].decode()


def test_an_unknown_incident_is_said_and_nothing_is_shared(bot: BotProcess) -> None:
    sent = bot.command("/escalate", "postmortem INC-987653")
    answer(bot.slack, "There is no incident INC-987653.")
    assert bot.slack.files_in(sent.channel) == []


def test_postmortem_without_an_incident_name_gets_the_usage(bot: BotProcess) -> None:
    reply = bot.command("/escalate", "postmortem").response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Name the incident: `/escalate postmortem INC-<n>`" in reply["text"]
    assert "/escalate postmortem INC-<n>" in reply["text"]


def test_the_console_saves_the_draft_when_the_incident_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = (REPO / "config" / "eventmesh.yml").read_text()
    (tmp_path / "config" / "eventmesh.yml").write_text(config)
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.sendline("/escalate api 5xx spike --sev 1")
    child.expect_exact("→ DM @U0ONCALL")
    child.expect_exact(PROMPT)
    child.sendline("as U0ONCALL /escalate resolve INC-1")
    child.expect(r"Post-mortem draft · INC-1: saved to (\S+INC-1-postmortem\.md)")
    saved = Path(child.match.group(1))
    markdown = saved.read_text()
    assert "- **Time to resolve:** " in markdown and "Resolved by @U0ONCALL" in markdown
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.fixture
def paging(tmp_path: Path, slack: SlackFake) -> Iterator[Launcher]:
    """Bots of their own, with escalation levels staffed by people only they page."""
    launcher = Launcher(tmp_path, slack)
    yield launcher
    launcher.stop_all()


def test_a_paged_incident_acknowledged_from_the_page_and_resolved_from_the_card(
    paging: Launcher,
) -> None:
    esc = paging.start()  # 10 min levels: only level 1 is paged while the test runs
    oncall = esc.team.levels[0][0]
    esc.open("orders API 502s --sev 1")
    (page,) = [call.args for call in esc.wait_pages(1)]
    (paged,) = esc.dms(oncall)
    esc.press("incident_ack", with_channel(paged, dm(oncall)), oncall)
    esc.slack.wait_for(lambda fake: "Acknowledged" in shown(esc.card()))
    esc.press("incident_resolve", with_channel(esc.card(), esc.channel), oncall)

    (draft,) = files_in(esc.slack, esc.channel, 1)
    share = next(m for m in esc.slack.channel_messages(esc.channel) if m.get("files"))
    assert share["thread_ts"] == esc.card()["ts"]
    markdown = draft["content"].decode()
    timeline = markdown.split("## Timeline\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(" — ", 1)[1] for line in timeline] == [
        "Incident opened, by @U0USER with /escalate",
        f"Paged @{oncall} (level 1, On-call DevOps Engineer)",
        f"Acknowledged by @{oncall}",
        f"Resolved by @{oncall}",
    ]
    assert "- **Time to acknowledge:** " in markdown and f"by @{oncall}" in markdown
    assert "reached level 1 of 4 (On-call DevOps Engineer); 1 page to 1 person" in markdown
    assert page["channel"] == dm(oncall)
