"""GET /readyz: ready while Slack and the store answer; not ready (503, and why) once Slack
has been out of reach for longer than slack.ready_grace; ready again when it is back. The
real bot over HTTP, the Slack fake made unreachable (tests/support/slack_faults.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    BOT_TOKEN,
    STARTUP_TIMEOUT_S,
    BotProcess,
    http_bot,
    new_channel,
    start_bot,
    stop_process,
    write_config,
)
from tests.support.replicas import metric
from tests.support.slack_fake import SlackFake
from tests.support.socket_mode_fake import SocketModeFake
from tests.support.waiting import wait_until

GRACE_S = 3
APP_TOKEN = "xapp-test-token"


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake(bot_token=BOT_TOKEN) as fake:
        yield fake


def readyz(bot: BotProcess) -> httpx.Response:
    return bot.http.get(f"{bot.url}/readyz")


def test_readyz_is_unready_past_the_grace_of_a_slack_outage_and_ready_after(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    incidents = new_channel()
    config = write_config(
        tmp_path / "eventmesh.yml",
        {"dev": dead_url},
        slack={"incidents_channel": incidents, "ready_grace": f"{GRACE_S}s"},
        escalation={"levels": [{"name": "On-call", "users": ["U0ONCALL"]}]},
    )
    with http_bot(tmp_path, slack, config) as bot:
        assert readyz(bot).json()["status"] == "ready"
        assert metric(bot, "eventmesh_bot_ready") == 1

        slack.fault("refuse")
        down_at = time.monotonic()
        # Something to send: the outbox finds Slack away when it tries (nothing polls Slack).
        assert bot.command("/escalate", "orders API down").response.status_code == 200
        wait_until("/readyz says not ready", lambda: readyz(bot).status_code == 503, timeout=60)
        unready_after = time.monotonic() - down_at
        answer = readyz(bot).json()
        assert bot.http.get(f"{bot.url}/healthz").status_code == 200  # alive all the same
        assert metric(bot, "eventmesh_bot_ready") == 0

        slack.heal()
        wait_until("/readyz says ready again", lambda: readyz(bot).status_code == 200, timeout=60)
        assert metric(bot, "eventmesh_bot_ready") == 1
        slack.wait_for(
            lambda f: any(m["text"].startswith("INC-1 ") for m in f.channel_messages(incidents))
        )
        log = bot.log.read_text()

    assert unready_after >= GRACE_S
    assert answer["status"] == "unready"
    (problem,) = answer["problems"]
    assert problem.startswith("Slack Web API unreachable since ")
    # One line per change of state, however long the outage and however often asked.
    assert log.count("not ready: Slack Web API unreachable since") == 1, log
    assert log.count("ready again") == 1, log
    assert log.count("Slack Web API unreachable since") == 2, log  # the outbox's, and readiness's
    assert log.count("Slack Web API reachable again") == 1, log
    assert "Traceback" not in log


def test_readyz_is_unready_while_socket_mode_stays_disconnected_past_the_grace(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = write_config(
        tmp_path / "eventmesh.yml", {"dev": dead_url}, slack={"ready_grace": f"{GRACE_S}s"}
    )
    # No Socket Mode server yet: apps.connections.open is refused, the client keeps trying.
    process, url, log = start_bot(
        tmp_path,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(config),
    )
    bot = BotProcess(url, process, log, "", slack)
    try:
        with SocketModeFake() as socket_mode:
            wait_until("/readyz says not ready", lambda: readyz(bot).status_code == 503)
            (problem,) = readyz(bot).json()["problems"]
            assert metric(bot, "eventmesh_bot_ready") == 0

            slack.socket_mode = socket_mode
            socket_mode.wait_for_connection(timeout=STARTUP_TIMEOUT_S)
            wait_until("/readyz says ready", lambda: readyz(bot).status_code == 200)
            assert metric(bot, "eventmesh_bot_ready") == 1
            bot.http.close()
            assert stop_process(process) == 0
    finally:
        stop_process(process)
    text = log.read_text()

    assert problem.startswith("Socket Mode disconnected since ")
    assert text.count("not ready: Socket Mode disconnected since") == 1, text
    assert text.count("Socket Mode connected (after") == 1, text
    assert "Traceback" not in text
