"""A rollback's follow-up checks: they outlive a bot restart (and say so), and a failing one
raises an alert in the alerts channel, and its recovery another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import Config
from tests.conftest import BotProcess, start_slack_bot, stop_process
from tests.support.deploy_env import DemoTarget, demo_target, run_deploy
from tests.support.deploy_reports import final_deploy, text_of, thread, wait_in_thread
from tests.support.slack_fake import SlackFake

ALERTS = "C0FOLLOWUPALERTS"


@pytest.fixture
def qa(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "qa")
    yield target
    target.stop()


def test_follow_up_checks_survive_a_restart_and_alert_on_a_failure(
    tmp_path: Path, slack: SlackFake, qa: DemoTarget
) -> None:
    env = qa.environment(followup_every="1s", followup_for="15s")
    local = Config.model_validate({"environments": {"qa": env}})
    for version in ("1.0.0", "1.0.1"):
        assert run_deploy(local, "qa", version)[1].ok
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                "slack": {"alerts_channel": ALERTS},
                "access": {"deployers": ["U0DEPLOY1"]},
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
        wait_in_thread(slack, channel, final["ts"], "Follow-up check 1 of 15")
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
        assert numbers == sorted(numbers) and numbers[-1] <= 15
        # Only one alert for the failing stretch: on the change, not on every failing check.
        failing = [m for m in slack.channel_messages(ALERTS) if "fails its follow-up" in text_of(m)]
        assert len(failing) == 1
    finally:
        for bot in (first, second):
            if bot is not None:
                bot.http.close()
                stop_process(bot.process)
