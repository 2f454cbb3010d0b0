"""/health <env> diagnose and /health <env> logs through the real bot (HTTP mode, Slack fake),
against the loopback sshd and a demo service that writes its log.

`fleet` is 200 host entries on an sshd that records when each session's command starts and
ends, at the host: how many ran at once is counted there, not taken from the bot's word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import Deployment, Store
from tests.conftest import TEST_LIMITS, BotProcess, http_bot
from tests.support.conversation import Conversation, Message, buttons, text_of
from tests.support.diagnose_env import LoggedService, environment, start_logged_service
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, header_of
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd, start_sshd

FLEET = 200
DIAGNOSE_TIMEOUT_S = 240.0

# Each session's command, bracketed by its start and end at the host (nanoseconds).
COUNTING = """\
echo "start $(date +%s%N)" >> {sessions}
sh -c "$SSH_ORIGINAL_COMMAND"
status=$?
echo "end $(date +%s%N)" >> {sessions}
exit $status
"""


@pytest.fixture(scope="module")
def counting_sshd(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd
) -> Iterator[tuple[Sshd, Path]]:
    tmp = tmp_path_factory.mktemp("counting-sshd")
    sessions = tmp / "sessions.log"
    wrapper = tmp / "count.sh"
    wrapper.write_text(COUNTING.format(sessions=sessions))
    server = start_sshd(
        tmp / "sshd", client_key=sshd.client_key, extra_config=[f"ForceCommand sh {wrapper}"]
    )
    yield server, sessions
    server.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedService]:
    """Running, 6,000 ordinary lines in its log, then 12 errors of two types and 3 warnings."""
    running = start_logged_service(tmp_path_factory.mktemp("service"))
    running.write_log(("info", "Request", 6000))
    running.write_log(
        ("error", "ConnectionRefused", 7), ("error", "Timeout", 5), ("warn", "SlowQuery", 3)
    )
    running.set_faults(
        log=[{"level": "info", "type": "Request", "message": "user typed $(reboot) here"}]
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def restarts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test environments' service command records each restart, at the host."""
    return tmp_path_factory.mktemp("restarts") / "restarts.log"


@pytest.fixture(scope="module")
def diagnose_bot(
    tmp_path_factory: pytest.TempPathFactory,
    restarts: Path,
    slack: SlackFake,
    sshd: Sshd,
    counting_sshd: tuple[Sshd, Path],
    service: LoggedService,
) -> Iterator[BotProcess]:
    tmp = tmp_path_factory.mktemp("diagnose-bot")
    counting, _ = counting_sshd
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(
        (sshd.directory / "known_hosts.all").read_text()
        + (counting.directory / "known_hosts.all").read_text()
    )
    config = {
        "access": {"deployers": ["U0DEPLOY1"], "approvers": ["U0APPROVER1"]},
        "environments": {
            "staging": environment(service, [str(sshd.host)]),
            "fleet": environment(service, [str(counting.host)] * FLEET),
            # Restart service: the command runs on the host (through the sshd), then the
            # service's healthz must pass 3 times in a row.
            "restartable": environment(
                service,
                [str(sshd.host)],
                restart=f"echo restartable >> {restarts}",
                verify_interval="1s",
            ),
            "guarded": environment(
                service,
                [str(sshd.host)],
                restart=f"echo guarded >> {restarts}",
                verify_interval="1s",
                requires_approval=True,
            ),
            "broken": environment(
                service, [str(sshd.host)], restart="echo no such unit >&2; exit 5"
            ),
        },
        "alerts": {"scheduled_checks": False},
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "ssh": {
            "key_file": str(sshd.client_key),
            "known_hosts": str(known_hosts),
            "connect_timeout": "10s",
            "command_timeout": "60s",
        },
    }
    path = tmp / "eventmesh.yml"
    path.write_text(json.dumps(config))
    with http_bot(tmp, slack, path, LOG_LEVEL="DEBUG") as bot:
        yield bot


def final_message(slack: SlackFake, channel: str, title: str) -> dict[str, Any]:
    """The channel's message under this header once it is done (buttons, or a final text)."""

    def done(fake: SlackFake) -> dict[str, Any] | None:
        for message in fake.channel_messages(channel):
            if header_of(message) != title or "thread_ts" in message:
                continue
            text = message.get("text", "")
            if buttons(message) or (title.startswith("Logs") and text.startswith("Logs of")):
                return message
        return None

    return slack.wait_for(done, timeout=DIAGNOSE_TIMEOUT_S)


def posts_and_edits(slack: SlackFake, channel: str, ts: str) -> tuple[int, int]:
    posts = [c for c in slack.calls_to("chat.postMessage") if c.args.get("channel") == channel]
    edits = [c for c in slack.calls_to("chat.update") if c.args.get("ts") == ts]
    return len(posts), len(edits)


def test_diagnose_fills_in_one_message_with_the_counts_and_the_buttons(
    diagnose_bot: BotProcess, service: LoggedService, sshd: Sshd
) -> None:
    sent = diagnose_bot.command("/health", "staging diagnose")
    assert sent.response.status_code == 200 and sent.seconds < SLACK_ACK_DEADLINE_S

    message = final_message(diagnose_bot.slack, sent.channel, "Diagnosis · staging")

    text = text_of(message)
    assert f"*{sshd.host}*" in text
    assert f"pid {service.process.pid} · up " in text
    assert f"{service.port} held by the service, pid {service.process.pid} (ss)" in text
    assert "HTTP 200 in" in text and "with curl" in text
    assert "0 panics · 12 errors · 3 warnings — `ERROR ConnectionRefused` ×7 · " in text
    assert "`ERROR Timeout` ×5 · `WARN SlowQuery` ×3" in text
    assert "the last 2,000 lines" in text
    assert "*Errors in the log* (not one of the runbook's) → 12 errors in the last" in text
    assert "From the bot" in text and "Healthy" in text
    assert buttons(message) == {
        "diagnose_restart": "staging",
        "diagnose_logs": "staging",
        "diagnose_rollback": "staging",
    }
    assert block_kit_errors(message["blocks"]) == []
    posts, edits = posts_and_edits(diagnose_bot.slack, sent.channel, message["ts"])
    assert posts == 1 and edits >= 1


def test_the_logs_button_shows_the_errors(diagnose_bot: BotProcess) -> None:
    sent = diagnose_bot.command("/health", "staging diagnose")
    diagnosis = final_message(diagnose_bot.slack, sent.channel, "Diagnosis · staging")

    diagnose_bot.press("diagnose_logs", "staging", channel=sent.channel, message_ts=diagnosis["ts"])

    logs = final_message(diagnose_bot.slack, sent.channel, "Logs · staging")
    text = text_of(logs)
    assert "errors, the last 100" in text
    assert "12 lines · 0 panics · 12 errors · 0 warnings" in text
    code = re.search(r"```(.*)```", text, re.S)
    assert code is not None
    assert len(code[1].splitlines()) == 12 and "SlowQuery" not in code[1]
    assert block_kit_errors(logs["blocks"]) == []


def test_the_roll_back_button_is_rollback_for_deployers_only(diagnose_bot: BotProcess) -> None:
    chat = Conversation(diagnose_bot)
    asked = chat.as_("U0USER").say("/health staging diagnose")
    diagnosis = asked.message("Diagnosis · staging")
    diagnosis.when(lambda m: "diagnose_rollback" in buttons(m), timeout=DIAGNOSE_TIMEOUT_S)

    diagnosis.press("Roll back", as_="U0USER").private("Only deployers")
    # /rollback staging's own answer: the hosts were read, and nothing is installed there.
    diagnosis.press("Roll back", as_="U0DEPLOY1").private(
        "Nothing is installed on staging yet", timeout=60
    )


def diagnosed(diagnose_bot: BotProcess, env: str) -> Message:
    asked = Conversation(diagnose_bot).as_("U0USER").say(f"/health {env} diagnose")
    diagnosis = asked.message(f"Diagnosis · {env}")
    diagnosis.when(lambda m: "diagnose_restart" in buttons(m), timeout=DIAGNOSE_TIMEOUT_S)
    return diagnosis


def restart_runs(diagnose_bot: BotProcess, env: str) -> list[Deployment]:
    store = Store(diagnose_bot.database_url)
    try:
        return store.deployments(env, kind="restart")
    finally:
        store.close()


def test_restart_service_runs_the_service_command_and_verifies_for_deployers_only(
    diagnose_bot: BotProcess, restarts: Path
) -> None:
    diagnosis = diagnosed(diagnose_bot, "restartable")

    diagnosis.press("Restart service", as_="U0USER").private("Only deployers")
    pressed = diagnosis.press("Restart service", as_="U0DEPLOY1")
    run = pressed.message("Restart the service on restartable")
    final = run.when("Restarted the service on restartable: 1 host, healthy.", timeout=120)

    assert restarts.read_text().splitlines().count("restartable") == 1
    assert block_kit_errors(final["blocks"]) == []
    (recorded,) = restart_runs(diagnose_bot, "restartable")
    assert recorded.state == "succeeded" and recorded.requested_by == "U0DEPLOY1"
    store = Store(diagnose_bot.database_url)
    try:
        assert store.environment_lock("restartable") is None  # unlocked again
    finally:
        store.close()


def test_a_restart_that_fails_says_so_and_frees_the_environment(diagnose_bot: BotProcess) -> None:
    diagnosis = diagnosed(diagnose_bot, "broken")
    pressed = diagnosis.press("Restart service", as_="U0DEPLOY1")
    run = pressed.message("Restart the service on broken")
    final = run.when("Restart of broken failed", timeout=120)
    assert "exited with status 5" in text_of(final) and "no such unit" in text_of(final)
    (recorded,) = restart_runs(diagnose_bot, "broken")
    assert recorded.state == "failed"


def test_restart_where_approval_is_required_waits_for_an_approver(
    diagnose_bot: BotProcess, restarts: Path
) -> None:
    diagnosis = diagnosed(diagnose_bot, "guarded")
    pressed = diagnosis.press("Restart service", as_="U0DEPLOY1")
    request = pressed.message("Approval needed: restart the service on guarded")
    assert not restarts.exists() or "guarded" not in restarts.read_text()
    assert restart_runs(diagnose_bot, "guarded") == []

    request.press("Approve", as_="U0APPROVER1")
    run = pressed.message("Restart the service on guarded", timeout=60)
    run.when("Restarted the service on guarded: 1 host, healthy.", timeout=120)
    assert restarts.read_text().splitlines().count("guarded") == 1
    (recorded,) = restart_runs(diagnose_bot, "guarded")
    assert recorded.approved_by == "U0APPROVER1"


def test_5000_lines_go_to_a_file_in_the_thread(
    diagnose_bot: BotProcess, service: LoggedService, sshd: Sshd
) -> None:
    sent = diagnose_bot.command("/health", "staging logs 5000")

    message = final_message(diagnose_bot.slack, sent.channel, "Logs · staging")
    (shared,) = diagnose_bot.slack.wait_for(lambda fake: fake.files_in(sent.channel), timeout=30)

    content = shared["content"].decode()
    lines = service.log_file.read_text().splitlines()
    expected = lines[-5000:]
    header = f"== {sshd.host} · {service.log_file} · 5,000 lines =="
    assert header in content
    assert content.split(header + "\n", 1)[1].splitlines()[:5000] == expected
    upload = [m for m in diagnose_bot.slack.channel_messages(sent.channel) if m.get("files")]
    assert upload[0]["thread_ts"] == message["ts"]
    text = text_of(message)
    assert "5,000 lines" in text and "in this message's thread" in text
    assert len(json.dumps(message["blocks"])) < 8000  # the lines are in the file, not here
    assert block_kit_errors(message["blocks"]) == []


def test_matching_is_literal_through_the_bot(
    diagnose_bot: BotProcess, service: LoggedService, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    for text in ("$(reboot)", f"$(touch {canary})", f"`touch {canary}`; touch {canary}"[:100]):
        sent = diagnose_bot.command("/health", f"staging logs matching {text}")
        message = final_message(diagnose_bot.slack, sent.channel, "Logs · staging")
        found = text_of(message)
        if text == "$(reboot)":
            assert "1 line · " in found and "user typed $(reboot) here" in found
        else:
            assert "0 lines" in found
    assert not canary.exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("staging logs 99999", "ask for 1 to 5,000"),
        ("staging logs 0", "ask for 1 to 5,000"),
        ("staging logs matching", "`matching` needs the text"),
        ("staging logs matching    ", "`matching` needs the text"),
        ("staging logs matching " + "x" * 101, "at most 100 characters"),
        ("staging logs errors warnings", "does not understand"),
        ("staging logs 5 errors", "does not understand"),
        ("all logs", "follows one environment"),
        ("nosuch diagnose", "Unknown environment"),
        ("staging diagnose now", "does not understand"),
        ("x" * 5000, "5,000 characters"),
    ],
)
def test_bad_input_gets_the_usage_privately_and_runs_nothing(
    diagnose_bot: BotProcess, sshd: Sshd, text: str, problem: str
) -> None:
    logins = sshd.log_text().count("Accepted publickey")
    sent = diagnose_bot.command("/health", text)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert problem in reply["text"]
    assert "/health <env> logs [errors|warnings] [N] [matching <text>]" in reply["text"]
    assert block_kit_errors(reply["blocks"]) == []
    # A valid command afterwards as a barrier: once it is done, the bad one would have shown.
    barrier = diagnose_bot.command("/health", "staging logs 1")
    final_message(diagnose_bot.slack, barrier.channel, "Logs · staging")
    assert diagnose_bot.slack.channel_messages(sent.channel) == []
    assert sshd.log_text().count("Accepted publickey") == logins + 1


def most_at_once(sessions: Path) -> tuple[int, int]:
    """(sessions, the most whose commands ran at the same time), from the host's record."""
    events = []
    for line in sessions.read_text().splitlines():
        kind, at = line.split()
        events.append((int(at), 1 if kind == "start" else -1))
    running = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        running += change
        peak = max(peak, running)
    return sum(1 for _, change in events if change == 1), peak


def test_200_hosts_at_most_5_at_a_time_in_one_message(
    diagnose_bot: BotProcess, counting_sshd: tuple[Sshd, Path]
) -> None:
    _, sessions = counting_sshd
    sessions.unlink(missing_ok=True)
    sent = diagnose_bot.command("/health", "fleet diagnose")
    assert sent.seconds < SLACK_ACK_DEADLINE_S

    message = final_message(diagnose_bot.slack, sent.channel, "Diagnosis · fleet")

    count, peak = most_at_once(sessions)
    assert count == FLEET
    assert 2 <= peak <= 5, peak
    assert "200 of 200 hosts answered, 5 at a time" in text_of(message)
    assert block_kit_errors(message["blocks"]) == []
    posts, edits = posts_and_edits(diagnose_bot.slack, sent.channel, message["ts"])
    assert posts == 1 and edits >= 2
    print(f"\n200 hosts: {count} sessions, at most {peak} at once, 1 message, {edits} edits")
