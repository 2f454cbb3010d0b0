"""The runbook's recovery checklists in an incident's thread, through the real bot (HTTP mode,
the Slack fake): offered by the card's Runbook button, posted in the thread, ticked in place —
by two people at the same moment too — and the steps the bot can do, as their commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pexpect
import pytest

from bot.store import Store
from tests.conftest import REPO, Sent, free_port
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.test_console import PROMPT, plain, spawn_console
from tests.test_escalate_e2e import EscalationBot, Launcher, with_channel

TICK = "incident_checklist_tick"


@pytest.fixture
def launch(tmp_path: Path, slack: SlackFake) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, slack)
    yield launcher
    launcher.stop_all()


def checklist_in_thread(esc: EscalationBot, title: str) -> dict[str, Any]:
    def posted(fake: SlackFake) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in fake.channel_messages(esc.channel)
                if "thread_ts" in m and m["text"].startswith(f"{title} checklist for")
            ),
            None,
        )

    return esc.slack.wait_for(posted)


def steps(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(block_id, checkboxes element) of each step, in order."""
    return [
        (block["block_id"], element)
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["type"] == "checkboxes"
    ]


def step_buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        element["text"]["text"]: element["action_id"]
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["type"] == "button"
    }


def tick(esc: EscalationBot, message: dict[str, Any], step: int, user: str, on: bool) -> Sent:
    block_id, box = steps(message)[step]
    return esc.bot.press(
        TICK,
        "",
        channel=esc.channel,
        message_ts=message["ts"],
        user_id=user,
        block_id=block_id,
        selected_options=[box["options"][0]] if on else [],
    )


def post_checklist(esc: EscalationBot, user: str, procedure: str, title: str) -> dict[str, Any]:
    card = esc.card()
    esc.press("incident_runbook", with_channel(card, esc.channel), user)

    def offered(fake: SlackFake) -> dict[str, Any] | None:
        return next((r for r in fake.responses if "runbook's procedures" in shown(r)), None)

    choices = esc.slack.wait_for(offered)
    labels = [
        e["text"]["text"]
        for b in choices["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert labels == [
        "Complete System Failure",
        "Data Corruption",
        "Health Check Failures",
        "Rollback Checklist",
    ]
    assert block_kit_errors(choices["blocks"]) == []
    sent = esc.bot.press(
        "incident_runbook_post",
        f"INC-1:{procedure}",
        channel=esc.channel,
        message_ts=card["ts"],
        user_id=user,
        block_id=f"runbook:INC-1:{procedure}",
    )
    assert sent.response.status_code == 200
    return checklist_in_thread(esc, title)


def ticked(message: dict[str, Any]) -> list[bool]:
    return [bool(box.get("initial_options")) for _, box in steps(message)]


def test_two_people_ticking_at_once_keep_both_ticks_shown_in_place_and_on_the_timeline(
    launch: Launcher,
) -> None:
    esc = launch.start()
    oncall, lead = esc.team.levels[0][0], esc.team.levels[1][0]
    esc.open("orders table corrupt --env local")
    esc.wait_pages(1)
    message = post_checklist(esc, oncall, "complete_failure", "Complete System Failure")
    assert "*Complete System Failure* — the runbook's Disaster Recovery" in shown(message)
    assert [box["options"][0]["text"]["text"] for _, box in steps(message)] == [
        "1. Identify failure scope and cause",
        "2. Check backup availability",
        "3. Provision new infrastructure (if needed)",
        "4. Restore from most recent backup",
        "5. Verify system health",
        "6. Resume normal operations",
        "7. Post-mortem analysis",
    ]
    assert step_buttons(message) == {
        "Run /rollback list local": "incident_checklist_backups",
        "Run /rollback local <the newest backup>": "incident_checklist_restore",
        "Run /health local": "incident_checklist_health",
    }
    assert ticked(message) == [False] * 7
    assert block_kit_errors(message["blocks"]) == []

    # Two people tick two steps at the same moment (presses on the same copy of the message).
    with ThreadPoolExecutor(2) as pool:
        presses = [
            pool.submit(tick, esc, message, 0, oncall, True),
            pool.submit(tick, esc, message, 1, lead, True),
        ]
        assert all(p.result().response.status_code == 200 for p in presses)

    def both(fake: SlackFake) -> dict[str, Any] | None:
        now = checklist_in_thread(esc, "Complete System Failure")
        return now if ticked(now)[:2] == [True, True] else None

    now = esc.slack.wait_for(both)
    assert ticked(now) == [True, True] + [False] * 5
    (_, first), (_, second) = steps(now)[:2]
    assert f"done by <@{oncall}> at " in first["options"][0]["description"]["text"]
    assert f"done by <@{lead}> at " in second["options"][0]["description"]["text"]
    assert "2 of 7 steps done" in shown(now)
    assert block_kit_errors(now["blocks"]) == []

    # Unticked again by pressing it off; the timeline keeps both the tick and the untick.
    tick(esc, now, 0, lead, False)
    esc.slack.wait_for(
        lambda fake: (
            ticked(checklist_in_thread(esc, "Complete System Failure"))[:2] == [False, True]
        )
    )
    store = Store(esc.bot.database_url)
    try:
        timeline = [(e.kind, e.user_id, e.detail) for e in store.incident_events(1)]
    finally:
        store.close()
    assert timeline[0][0] == "opened"
    assert timeline[1] == ("checklist", oncall, "complete_failure")
    ticks = [(k, w, d.split(":")[1]) for k, w, d in timeline[2:]]
    assert sorted(ticks[:2]) == sorted([("checked", oncall, "0"), ("checked", lead, "1")])
    assert ticks[2] == ("unchecked", lead, "0")
    # One checklist message in the thread, updated in place; no thread line per tick.
    thread = [m for m in esc.slack.channel_messages(esc.channel) if "thread_ts" in m]
    assert len([m for m in thread if "checklist for" in m["text"]]) == 1
    assert not any("checked" in m["text"] for m in thread)


def test_a_steps_button_runs_its_command_with_its_rule(launch: Launcher) -> None:
    esc = launch.start()
    oncall = esc.team.levels[0][0]
    esc.open("api down --env local")
    esc.wait_pages(1)
    message = post_checklist(esc, oncall, "complete_failure", "Complete System Failure")
    buttons = {
        e["action_id"]: (b["block_id"], e["value"])
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    }

    # Verify system health: /health local, a report of its own (the checklist stays).
    block_id, value = buttons["incident_checklist_health"]
    esc.bot.press(
        "incident_checklist_health",
        value,
        channel=esc.channel,
        message_ts=message["ts"],
        user_id=oncall,
        block_id=block_id,
    )

    def report(fake: SlackFake) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in fake.channel_messages(esc.channel)
                if "thread_ts" not in m and "local" in shown(m) and "Unhealthy" in shown(m)
            ),
            None,
        )

    esc.slack.wait_for(report, timeout=60)
    assert checklist_in_thread(esc, "Complete System Failure")["blocks"] == message["blocks"]

    # Restore from most recent backup is /rollback's: deployers only.
    block_id, value = buttons["incident_checklist_restore"]
    sent = esc.bot.press(
        "incident_checklist_restore",
        value,
        channel=esc.channel,
        message_ts=message["ts"],
        user_id=oncall,
        block_id=block_id,
    )

    def refused(fake: SlackFake) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in fake.responses
                if r["url"] == sent.response_url and "Only deployers" in shown(r)
            ),
            None,
        )

    esc.slack.wait_for(refused)


def test_an_incident_without_an_environment_gets_the_checklist_without_buttons(
    launch: Launcher,
) -> None:
    esc = launch.start()
    oncall = esc.team.levels[0][0]
    esc.open("something is off")
    esc.wait_pages(1)
    message = post_checklist(esc, oncall, "rollback_checklist", "Rollback Checklist")
    assert len(steps(message)) == 8 and step_buttons(message) == {}
    assert "no environment on the incident" in shown(message)


def test_the_console_shows_the_checklist_as_lines_and_ticks_by_number(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    # Its demo service on a port of its own: other consoles on this machine start theirs on
    # the default 8080 at the same moment.
    config = (REPO / "config" / "eventmesh.yml").read_text()
    config = config.replace("--port 8080", f"--port {free_port()}")
    (tmp_path / "config" / "eventmesh.yml").write_text(config)
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.sendline("/escalate orders table corrupt --env local")
    child.expect(r"\[(\d+)\] Runbook")
    runbook = child.match.group(1)
    assert "INC-1 · SEV 2 · local · Triggered" in plain(child.before)
    child.expect_exact(PROMPT)
    child.sendline(runbook)
    child.expect(r"\[(\d+)\] Data Corruption")
    data_corruption = child.match.group(1)
    child.expect_exact(PROMPT)
    child.sendline(data_corruption)
    child.expect_exact("0 of 7 steps done")
    shown_lines = plain(child.before)
    child.expect_exact(PROMPT)
    assert "[ ] 1. Stop affected services immediately [" in shown_lines
    match = re.search(r"\[ \] 3\. Restore from backup \[(\d+)\]", shown_lines)
    assert match is not None, shown_lines
    assert "Run /rollback local <the newest backup>" in shown_lines
    child.sendline(match.group(1))
    child.expect(r"\[x\] 3\. Restore from backup — done by @UCONSOLE at \d\d:\d\d:\d\d UTC \[\d+\]")
    child.expect_exact("1 of 7 steps done")
    child.sendline("exit")
    child.expect(pexpect.EOF)
