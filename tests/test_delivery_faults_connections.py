"""Delivery through Slack's faults (see tests/test_delivery_faults.py), the connection ones:
Slack refusing connections, and Slack carrying calls out while the answers are lost — which,
retried blindly, made 26–29 incident cards for 3 incidents. Here: one card each, one alert post.

And Socket Mode: while the Web API fails, commands still arrive on the socket and are acked
there within Slack's 3 s; what they post goes once Slack answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BOT_TOKEN, DemoService, new_channel, start_bot, stop_process
from tests.support.fault_drill import DrillBot, drill_bots, drill_config, own_slack
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.slack_fake import SlackFake
from tests.support.socket_mode_fake import SocketModeFake
from tests.test_delivery_faults import MODES, OUTAGE_S, through_an_outage

APP_TOKEN = "xapp-test-token"


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    yield from own_slack()


@pytest.fixture
def drills() -> Iterator[list[DrillBot]]:
    yield from drill_bots()


@pytest.mark.parametrize("mode", MODES[3:])
def test_slack_unreachable_or_answers_lost(
    mode: str, fake: SlackFake, demo: DemoService, tmp_path: Path, drills: list[DrillBot]
) -> None:
    through_an_outage(mode, fake, demo, tmp_path, drills)


def test_socket_mode_acks_on_the_socket_while_the_web_api_fails(
    fake: SlackFake, tmp_path: Path
) -> None:
    users = [f"U0{role}SOCK" for role in ("ONCALL", "LEAD", "MANAGER", "CTO")]
    incidents = new_channel()
    config = drill_config(
        tmp_path / "eventmesh.yml",
        users,
        incidents_channel=incidents,
        alerts_channel=new_channel(),
        service_url=None,
        level_timeout="1h",
    )
    with SocketModeFake() as socket:
        fake.socket_mode = socket
        process, _, log = start_bot(
            tmp_path,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_API_URL=fake.api_url,
            EVENTMESH_CONFIG=str(config),
        )
        try:
            socket.wait_for_connection(timeout=30)
            fake.fault("5xx", seconds=OUTAGE_S / 2)
            envelopes = [
                socket.slash_command(
                    "/escalate",
                    f"socket incident {n} --sev 1",
                    channel_id=new_channel(),
                    user_id=users[0],
                    response_url=fake.response_url(),
                )
                for n in (1, 2)
            ]
            for envelope in envelopes:
                ack = socket.wait_for_ack(envelope.envelope_id)
                assert ack.at - envelope.sent_at < SLACK_ACK_DEADLINE_S, socket.summary()
            assert fake.faulty  # acked while the Web API was still failing

            def delivered(f: SlackFake) -> bool:
                cards = [m for m in f.channel_messages(incidents) if "thread_ts" not in m]
                return len(cards) == 2 and len(f.channel_messages("D0ONCALLSOCK")) == 2

            fake.wait_for(delivered, timeout=OUTAGE_S * 3)
            assert len(fake.channel_messages("D0ONCALLSOCK")) == 2  # one page each, no more
        finally:
            code = stop_process(process)
            fake.socket_mode = None
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
