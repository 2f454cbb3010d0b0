"""Rollbacks across bot restarts: the follow-up checks outlive one (and say so; a failing check
raises an alert in the alerts channel, and its recovery another), and a rollback whose bot was
killed half-way is reported interrupted and opens an incident."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import Config
from tests.conftest import TEST_LIMITS, BotProcess, start_slack_bot, stop_process
from tests.support.deploy_env import DemoTarget, demo_target, install_release
from tests.support.deploy_reports import final_deploy, text_of, thread, wait_in_thread
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake

ALERTS = "C0FOLLOWUPALERTS"
INCIDENTS = "C0RECOVERYINCIDENTS"


@pytest.fixture
def qa(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "qa")
    yield target
    target.stop()


def test_follow_up_checks_survive_a_restart_and_alert_on_a_failure(
    tmp_path: Path, slack: SlackFake, qa: DemoTarget
) -> None:
    env = qa.environment(followup_every="1s", followup_for="12s")
    local = Config.model_validate({"environments": {"qa": env}})
    for version in ("1.0.0", "1.0.1"):
        install_release(local, "qa", version)
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                "slack": {"alerts_channel": ALERTS},
                "access": {"deployers": ["U0DEPLOY1"]},
                "alerts": {"scheduled_checks": False},  # this test is about commands, not alerts
                "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
                "environments": {"qa": env},
            }
        )
    )
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_slack_bot(first_dir, slack, config)
    second: BotProcess | None = None
    try:
        channel = first.command("/rollback", "qa", user_id="U0DEPLOY1").channel
        final = final_deploy(slack, channel)
        assert final["text"] == "Rolled back qa from v1.0.1 to v1.0.0.", text_of(final)
        wait_in_thread(slack, channel, final["ts"], "Follow-up check 1 of 12")
        assert stop_process(first.process) == 0

        second = start_slack_bot(second_dir, slack, config, database_url=first.database_url)
        resumed = wait_in_thread(
            slack, channel, final["ts"], "The bot restarted during the follow-up checks"
        )
        assert "They go on until" in text_of(resumed)

        httpx.post(f"{qa.url}/admin/faults", json={"healthz_status": 500}, timeout=5)
        alert = slack.wait_for(
            lambda fake: next(
                (m for m in fake.channel_messages(ALERTS) if "fails its follow-up" in text_of(m)),
                None,
            ),
            timeout=30,
        )
        assert "*qa* fails its follow-up check" in text_of(alert)
        assert "after rollback #" in text_of(alert) and "healthz answered HTTP 500" in text_of(
            alert
        )
        httpx.delete(f"{qa.url}/admin/faults", timeout=5)
        slack.wait_for(
            lambda fake: any(
                "passes its follow-up checks again" in text_of(m)
                for m in fake.channel_messages(ALERTS)
            ),
            timeout=30,
        )
        done = wait_in_thread(slack, channel, final["ts"], "Follow-up checks done")
        assert "checks failed on qa after the rollback (last: healthz answered HTTP 500" in (
            text_of(done)
        )
        checks = [
            m for m in thread(slack, channel, final["ts"]) if "Follow-up check " in text_of(m)
        ]
        numbers = [int(text_of(m).split("Follow-up check ")[1].split(" ")[0]) for m in checks]
        assert numbers == sorted(numbers) and numbers[-1] <= 12
        # Only one alert for the failing stretch: on the change, not on every failing check.
        failing = [m for m in slack.channel_messages(ALERTS) if "fails its follow-up" in text_of(m)]
        assert len(failing) == 1
    finally:
        for bot in (first, second):
            if bot is not None:
                bot.http.close()
                stop_process(bot.process)


def test_a_rollback_whose_bot_was_killed_is_reported_interrupted_and_pages(
    tmp_path: Path, slack: SlackFake, qa: DemoTarget
) -> None:
    env = qa.environment()
    local = Config.model_validate({"environments": {"qa": env}})
    for version in ("1.0.0", "1.0.1"):
        install_release(local, "qa", version)
    gate = tmp_path / "stop-gate"
    os.mkfifo(gate)
    env["stop"] = f"cat {gate} > /dev/null && {env['stop']}"  # the stop waits for the test
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                "slack": {"incidents_channel": INCIDENTS},
                "access": {"deployers": ["U0DEPLOY1"]},
                "escalation": {"levels": [{"name": "On-call", "users": ["U0ONCALL"]}]},
                "alerts": {"scheduled_checks": False},  # this test is about commands, not alerts
                "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
                "environments": {"qa": env},
            }
        )
    )
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_slack_bot(first_dir, slack, config)
    second: BotProcess | None = None
    try:
        channel = first.command("/rollback", "qa", user_id="U0DEPLOY1").channel
        stopping = slack.wait_for(
            lambda fake: next(
                (
                    m
                    for m in fake.channel_messages(channel)
                    if ":hourglass_flowing_sand: *Stop the service*" in text_of(m)
                ),
                None,
            ),
            timeout=60,
        )
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()

        second = start_slack_bot(second_dir, slack, config, database_url=first.database_url)
        told = wait_in_thread(slack, channel, stopping["ts"], "was interrupted")
        assert "during *Stop the service*" in text_of(told)
        incident = slack.wait_for(
            lambda fake: next(
                (
                    m
                    for m in fake.channel_messages(INCIDENTS)
                    if "of qa was interrupted during Stop the service" in shown(m)
                ),
                None,
            ),
            timeout=30,
        )
        assert "Rollback #" in shown(incident) and "SEV 2" in shown(incident)
    finally:
        release_gate(gate)  # lets the orphaned stop command finish
        for bot in (first, second):
            if bot is not None:
                bot.http.close()
                stop_process(bot.process)


def release_gate(gate: Path) -> None:
    """Write to the fifo if its reader is there (no reader: nothing waits on it)."""
    try:
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "w") as writer:
        writer.write("go\n")
