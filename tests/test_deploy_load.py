"""Deploys never take the slots /health needs: 20 /health while 3 deploys run, against idle.

Times are compared within this one run (idle burst, then the same burst beside three running
deploys), from each command's send to its report's final update as the Slack fake saw it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEST_LIMITS,
    BotProcess,
    DemoService,
    bot_database_url,
    start_bot,
    stop_process,
)
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import final_deploy, text_of
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, final_report
from tests.support.slack_fake import SlackFake

# Compares timings in one run: alone, after the parallel run (scripts/test).
pytestmark = pytest.mark.serial

HEALTH_COMMANDS = 20
CHECK_LATENCY_MS = 300


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[list[DemoTarget]]:
    made = [demo_target(tmp_path, name) for name in ("alpha", "beta", "gamma")]
    yield made
    for target in made:
        target.stop()


def burst(bot: BotProcess) -> list[float]:
    """Send HEALTH_COMMANDS /health at once; seconds from each send to its complete report."""

    def one(_: int) -> tuple[str, float]:
        started = time.monotonic()
        sent = bot.command("/health", "web")
        assert sent.response.status_code == 200 and sent.seconds < SLACK_ACK_DEADLINE_S
        return sent.channel, started

    with ThreadPoolExecutor(max_workers=HEALTH_COMMANDS) as pool:
        sent = list(pool.map(one, range(HEALTH_COMMANDS)))
    took = []
    for channel, started in sent:
        report = final_report(bot.slack, channel)
        assert "web* — Healthy" in text_of(report) or "Degraded" in text_of(report)
        finals = [
            c.at
            for c in bot.slack.calls_to("chat.update")
            if c.args["channel"] == channel and c.args["ts"] == report["ts"]
        ]
        took.append(max(finals) - started)
    return sorted(took)


def test_health_reports_stay_on_time_while_three_deploys_run(
    tmp_path: Path, slack: SlackFake, demo: DemoService, targets: list[DemoTarget]
) -> None:
    demo.set_faults(latency_ms=CHECK_LATENCY_MS)
    gates = []
    environments = {"web": {"base_url": demo.url, "transport": "local"}}
    for target in targets:
        gate = target.root / "build-gate"
        os.mkfifo(gate)
        gates.append(gate)
        env = target.environment()
        env["build"] = f"cat {gate} > /dev/null && {env['build']}"
        environments[target.name] = env
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                "access": {"deployers": ["U0DEPLOY1"]},
                "alerts": {"scheduled_checks": False},  # the load here is deploys and /health
                "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
                "environments": environments,
            }
        )
    )
    database_url = bot_database_url(tmp_path)
    process, url, log = start_bot(
        tmp_path,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(config),
        EVENTMESH_DATABASE_URL=database_url,
    )
    bot = BotProcess(url, process, log, database_url, slack)
    try:
        idle = burst(bot)

        channels = [
            bot.command("/deploy", f"{t.name} 1.0.0", user_id="U0DEPLOY1").channel for t in targets
        ]
        for channel in channels:
            slack.wait_for(
                lambda fake, channel=channel: any(
                    ":hourglass_flowing_sand: *Build*" in text_of(m)
                    for m in fake.channel_messages(channel)
                ),
                timeout=60,
            )
        busy = burst(bot)

        for gate in gates:
            with gate.open("w") as writer:
                writer.write("go\n")
        for channel in channels:
            assert final_deploy(slack, channel)["text"].startswith("Deployed v1.0.0")
    finally:
        bot.http.close()
        stop_process(process)

    check_s = CHECK_LATENCY_MS / 1000
    report = f"idle {[round(t, 2) for t in idle]}\nbusy {[round(t, 2) for t in busy]}"
    # Each report takes about its checks' time, deploys or not: no slot was taken from it.
    assert busy[len(busy) // 2] < idle[len(idle) // 2] + 1.0, report
    assert busy[-1] < max(idle[-1] * 2, idle[-1] + 1.5), report
    assert all(t >= check_s for t in busy), report
