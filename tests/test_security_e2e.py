"""Issue 16 end to end, on the real bot (HTTP mode) and the Slack fake: who may press an alert's
buttons, silences bounded, per-user rate limits, /escalate limited and de-duplicated, watches
bounded per person and stopped only by their starter or a responder, and the request-body
limit before the signature check.

Every wait is for something to happen (a message, an answer), never for a fixed time.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.store import Store
from tests.conftest import BotProcess, DemoService, http_bot, new_channel, write_config
from tests.support.alerts import ONCALL, alert_in, alerts_config
from tests.support.conversation import Conversation, Message, text_of
from tests.support.incident_messages import buttons
from tests.support.slack_fake import SlackFake

WAIT_S = 30.0
APPROVER = "U0APPROVER1"
STRANGER = "U0USER"  # no role, not on the escalation path


def audit(bot: BotProcess, command: str) -> list[tuple[str, str, str]]:
    """(user, outcome, result) of the audit rows of a command or button, oldest first."""
    store = Store(bot.database_url)
    try:
        rows = [e for e in store.audit_entries(1000) if e.command == command]
    finally:
        store.close()
    return [(e.user_id, e.outcome, e.result) for e in reversed(rows)]


def finished_audit(bot: BotProcess, command: str, count: int) -> list[tuple[str, str, str]]:
    """The audit rows of a command once `count` of them are finished (a row is finished after
    the request's work, a moment after its answer)."""

    def finished(_: SlackFake) -> list[tuple[str, str, str]] | None:
        rows = audit(bot, command)
        done = [row for row in rows if row[1] != "running"]
        return rows if len(done) >= count else None

    return bot.slack.wait_for(finished)


def alert_message(chat: Conversation, channel: str, words: str) -> Message:
    found = chat.slack.wait_for(lambda f: alert_in(f, channel, words), timeout=WAIT_S)
    return Message(chat, channel, found["ts"], found)


# --- alerts --------------------------------------------------------------------------------


@pytest.fixture
def alerting(
    tmp_path: Path, slack: SlackFake, demo: DemoService, demo_b: DemoService
) -> Iterator[tuple[Conversation, str, str]]:
    """staging (demo A) and production (demo B, requires approval) checked every second."""
    alerts, incidents = new_channel(), new_channel()
    config = alerts_config(
        tmp_path / "eventmesh.yml",
        {"staging": demo.url, "production": demo_b.url},
        alerts_channel=alerts,
        incidents_channel=incidents,
        alerts={"silence_for": "6h", "silence_max": "4h"},
        access={"deployers": ["U0DEPLOY1"], "approvers": [APPROVER]},
    )
    written = json.loads(config.read_text())
    written["environments"]["production"]["requires_approval"] = True
    config.write_text(json.dumps(written))
    with http_bot(tmp_path, slack, config) as bot:
        yield Conversation(bot), alerts, incidents


def test_a_silence_by_someone_with_no_role_is_refused_and_the_page_still_goes(
    alerting: tuple[Conversation, str, str], demo: DemoService
) -> None:
    chat, alerts, incidents = alerting
    pages_before = len(chat.slack.channel_messages("D" + ONCALL[1:]))  # the session's fake
    demo.set_faults(path_latency_ms={"/healthz": 700})
    warning = alert_message(chat, alerts, "*staging*")

    refused = warning.press("alert_silence", as_=STRANGER)
    answer = refused.private("may press Silence")
    assert answer.seen["response_type"] == "ephemeral"
    assert "Only responders may press Silence." in answer.text
    assert "escalation path" in answer.text  # where the role comes from
    assert finished_audit(chat.bot, "alert_silence", 1) == [
        (STRANGER, "denied", "Only responders may press Silence.")
    ]
    assert "Silenced" not in text_of(warning.now)

    # It turns Critical: the page goes out as if nobody had pressed anything.
    demo.set_faults(healthz_status=503)
    page = chat.slack.wait_for(
        lambda f: f.channel_messages("D" + ONCALL[1:])[pages_before:], timeout=WAIT_S
    )
    assert "staging · Health check response" in page[0]["text"]
    assert chat.slack.wait_for(lambda f: f.channel_messages(incidents), timeout=WAIT_S)
    # Acknowledge and Escalate are the responders' too.
    for button in ("Acknowledge", "Escalate"):
        warning.press(button, as_=STRANGER).private(f"Only responders may press {button}.")


def _hours_until(text: str, since: datetime) -> float:
    """Hours from `since` to the 'until HH:MM UTC' the text shows (across midnight too)."""
    found = re.search(r"until (\d\d):(\d\d)(?::(\d\d))? UTC", text)
    assert found is not None, text
    hour, minute, second = (int(part or 0) for part in found.groups())
    until = since.replace(hour=hour, minute=minute, second=second, microsecond=0)
    return (until - since).total_seconds() / 3600 % 24


def test_production_critical_is_silenced_by_an_approver_only_and_at_most_silence_max(
    alerting: tuple[Conversation, str, str], demo_b: DemoService
) -> None:
    chat, alerts, _ = alerting
    pages_before = len(chat.slack.channel_messages("D" + ONCALL[1:]))  # the session's fake
    demo_b.set_faults(healthz_status=503)
    critical = alert_message(chat, alerts, "*production*")
    chat.slack.wait_for(
        lambda f: f.channel_messages("D" + ONCALL[1:])[pages_before:], timeout=WAIT_S
    )

    # The on-call person is a responder, but production's Critical needs an approver.
    critical.press("alert_silence", as_=ONCALL).private(
        "production requires approval: only approvers (access.approvers) may silence"
    )
    assert "Silenced" not in text_of(critical.now)

    # An approver may. silence_for is 6h, silence_max 4h: the button says what it will do.
    assert buttons(critical.now) == ["Acknowledge", "Silence 4h", "Escalate"]
    pressed_at = datetime.now(UTC)
    answer = critical.press("alert_silence", as_=APPROVER).private("silenced until").text
    assert "capped: a silence lasts at most 4h from when it began" in answer
    shown = critical.when(f"Silenced by <@{APPROVER}> until")
    note = text_of(shown)
    assert 3.9 < _hours_until(note, pressed_at) < 4.1, note  # 4h on, shown with who

    again = critical.press("alert_silence", as_=APPROVER).private("already silenced").text
    assert "the most alerts.silence_max allows" in again
    rows = finished_audit(chat.bot, "alert_silence", 3)
    assert [outcome for _, outcome, _ in rows] == ["denied", "ok", "ok"]
    assert "(capped by alerts.silence_max)" in rows[1][2]


# --- rate limits and /escalate ------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path, slack: SlackFake, demo: DemoService) -> Iterator[BotProcess]:
    """The shipped limits: 10 of each command a minute, 3 incidents in 10 minutes, 2 watches."""
    config = write_config(
        tmp_path / "eventmesh.yml",
        {"local": demo.url, "staging": demo.url},
        limits={"watches_per_user": 2},
        escalation={"levels": [{"name": "On-call", "users": [ONCALL]}]},
    )
    with http_bot(tmp_path, slack, config) as bot:
        yield bot


def test_the_eleventh_command_in_a_minute_is_not_run(limited: BotProcess) -> None:
    chat = Conversation(limited)
    me = chat.as_("U0BUSY")
    for _ in range(10):
        me.say("/health local").message("Health · local")
    eleventh = me.say("/health local")
    refused = eleventh.answer
    assert refused["response_type"] == "ephemeral"
    assert "You ran /health 10 times in the last 1m (limits.commands)" in refused["text"]
    wait = re.search(r"try again in (\d+) s", refused["text"])
    assert wait is not None and 1 <= int(wait[1]) <= 60
    # Someone else is not held up by it; their report is the barrier.
    chat.as_("U0OTHER").say("/health local").message("Health · local")
    assert eleventh.posted() == []

    rows = finished_audit(limited, "/health", 12)  # U0BUSY's 11 and U0OTHER's
    assert [outcome for user, outcome, _ in rows if user == "U0BUSY"] == ["ok"] * 10 + ["limited"]


def test_escalate_joins_the_same_summary_and_opens_at_most_three_in_ten_minutes(
    limited: BotProcess,
) -> None:
    chat = Conversation(limited)
    me = chat.as_("U0LOUD")
    me.say("/escalate db down --sev 1").private("Opened *INC-")
    same = me.say("/escalate  DB   down").private("is already open for this")
    assert "INC-" in same.text
    me.say("/escalate queue stuck").private("Opened *INC-")
    me.say("/escalate disk full").private("Opened *INC-")
    fourth = me.say("/escalate cache cold")
    assert "You opened 3 incidents in the last 10m (limits.escalations)" in fourth.answer["text"]
    assert "try again in" in fourth.answer["text"]
    # The same summary still joins its open incident: that pages nobody.
    me.say("/escalate db down").private("is already open for this")
    store = Store(limited.database_url)
    try:
        summaries = sorted(i.summary for i in store.unresolved_incidents())
        (db,) = [i for i in store.unresolved_incidents() if i.summary == "db down"]
        notes = [e for e in store.incident_events(db.id) if e.kind == "note"]
    finally:
        store.close()
    assert summaries == ["db down", "disk full", "queue stuck"]
    assert [n.detail for n in notes] == ["Reported again with /escalate"] * 2


# --- watches ---------------------------------------------------------------------------------


def test_a_watch_is_stopped_by_its_starter_or_a_responder_and_one_person_holds_two(
    limited: BotProcess,
) -> None:
    chat = Conversation(limited)
    starter = chat.as_("U0WATCHER")
    first = starter.say("/health staging watch 10m").message("Watching staging")
    starter.say("/health local watch 10m").message("Watching local")
    third = starter.say("/health staging watch 10m")
    assert "You have 2 watches running" in third.answer["text"]
    assert "limits.watches_per_user" in third.answer["text"]
    chat.as_("U0SOMEONE").say("/health staging watch 1m").message("Watching staging")

    first.press("Stop", as_=STRANGER).private(
        "Only responders or whoever started it may press Stop."
    )
    assert "stopped" not in text_of(first.now)
    first.press("Stop", as_="U0WATCHER")
    first.when("stopped by <@U0WATCHER>")


# --- the request body, before the signature check ------------------------------------------


def test_a_body_over_the_limit_is_refused_unread(limited: BotProcess) -> None:
    host, port = limited.url.removeprefix("http://").split(":")
    # A gigabyte announced, nothing sent: the answer comes at once, without waiting for it.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: bot\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        status = sock.recv(200).split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 413 Request Entity Too Large"

    # Sent in chunks with no length: refused as soon as it is past the limit.
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 64 * 1024

    response = httpx.post(f"{limited.url}/slack/events", content=chunks(), timeout=30)
    assert response.status_code == 413

    # A signed command of the ordinary size is answered as always.
    ok = limited.command("/health", "help")
    assert ok.response.status_code == 200 and "Usage" in ok.response.json()["text"]
