"""Socket Mode end to end: the real bot, its real slack_sdk client, a WebSocket on loopback.

The bot runs as a subprocess with SLACK_BOT_TOKEN and SLACK_APP_TOKEN set, so it picks Socket
Mode itself: apps.connections.open on the SlackFake with the app token, then the
SocketModeFake's WebSocket. Commands and clicks arrive as envelopes; the ack the bot sends
back on the socket is all Slack shows the user within its 3 seconds, and the rest lands in the
SlackFake as in HTTP mode.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    BOT_TOKEN,
    STARTUP_TIMEOUT_S,
    DemoService,
    new_channel,
    start_bot,
    stop_process,
)
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, final_report, report_text
from tests.support.slack_fake import ApiCall, SlackFake, block_kit_errors
from tests.support.slack_signing import app_home_opened_event
from tests.support.socket_mode_fake import Ack, Envelope, SocketModeFake

APP_TOKEN = "xapp-test-token"
WS_CLOSE_OK = 1000  # a client that says goodbye; a killed one leaves 1006


@dataclass
class SocketBot:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    slack: SlackFake
    socket: SocketModeFake
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def command(self, command: str, text: str, channel: str) -> tuple[Envelope, Ack]:
        """Deliver a slash command over the socket; its ack, checked against Slack's deadline."""
        envelope = self.socket.slash_command(
            command, text, channel_id=channel, response_url=self.slack.response_url()
        )
        return envelope, self.acked(envelope)

    def acked(self, envelope: Envelope) -> Ack:
        ack = self.socket.wait_for_ack(envelope.envelope_id)
        assert ack.at - envelope.sent_at < SLACK_ACK_DEADLINE_S, self.socket.summary()
        return ack


def own_connection_calls(fake: SlackFake) -> list[ApiCall]:
    """This bot's apps.connections.open calls; other tests share the session's fake."""
    return [c for c in fake.calls_to("apps.connections.open") if c.token == APP_TOKEN]


@pytest.fixture(scope="module")
def socket_mode(slack: SlackFake) -> Iterator[SocketModeFake]:
    """The WebSocket side of Slack, attached to the session's Web API fake for this module."""
    with SocketModeFake() as server:
        slack.socket_mode = server
        try:
            yield server
        finally:
            slack.socket_mode = None


@pytest.fixture(scope="module")
def socket_bot(
    tmp_path_factory: pytest.TempPathFactory,
    slack: SlackFake,
    socket_mode: SocketModeFake,
    bot_config: Path,
) -> Iterator[SocketBot]:
    """The real bot in Socket Mode, ready once /healthz answers and its socket is open."""
    tmp = tmp_path_factory.mktemp("socket-bot")
    process, url, log = start_bot(
        tmp,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(bot_config),
    )
    bot = SocketBot(url, process, log, slack, socket_mode)
    try:
        try:
            # A refused apps.connections.open fails here at once, not after a long wait: the
            # client would only retry it every 10 s.
            opened = slack.wait_for(lambda f: own_connection_calls(f))[0]
            assert opened.error is None, f"apps.connections.open: {opened.error}"
            socket_mode.wait_for_connection(timeout=STARTUP_TIMEOUT_S)
        except AssertionError as e:
            raise AssertionError(f"{e}\nbot log:\n{log.read_text()}") from None
        yield bot
    finally:
        bot.http.close()
        code = stop_process(process)
    assert code == 0, f"the bot exited with {code} on SIGTERM:\n{log.read_text()}"
    # Exited means its sockets are gone; a clean close frame means it said goodbye first.
    socket_mode.wait_for(lambda f: not any(c.open for c in f.connections), timeout=5)
    codes = [c.close_code for c in socket_mode.connections]
    assert codes == [WS_CLOSE_OK] * len(codes), f"{socket_mode.summary()}\n{log.read_text()}"


def test_connects_with_the_app_token_and_keeps_the_socket_alive(socket_bot: SocketBot) -> None:
    opened = own_connection_calls(socket_bot.slack)
    assert opened
    assert all((c.token, c.error) == (APP_TOKEN, None) for c in opened)
    connection = socket_bot.socket.connections[0]
    # slack_sdk pings right after connecting, and must answer Slack's pings in turn.
    socket_bot.socket.wait_for(lambda _: connection.client_pings > 0)
    socket_bot.socket.ping()
    health = socket_bot.http.get(f"{socket_bot.url}/healthz").json()
    assert health["status"] == "healthy"


def test_health_staging_is_acked_then_reported(socket_bot: SocketBot, demo: DemoService) -> None:
    channel = new_channel()
    _, ack = socket_bot.command("/health", "staging", channel)
    assert ack.payload is None  # a bare ack: the report goes to the channel, not the asker

    report = final_report(socket_bot.slack, channel)
    assert block_kit_errors(report["blocks"]) == []
    assert "*staging* — Healthy" in report_text(report)


def test_bad_input_gets_usage_in_the_ack_and_runs_nothing(
    socket_bot: SocketBot, demo: DemoService
) -> None:
    channel = new_channel()
    _, ack = socket_bot.command("/health", "nosuchenv", channel)
    assert ack.payload is not None
    assert ack.payload["response_type"] == "ephemeral"
    assert "Usage" in ack.payload["text"]
    assert block_kit_errors(ack.payload["blocks"]) == []

    # A valid command afterwards works as a barrier: once its report is complete, anything the
    # bad one had started would have shown by then.
    barrier = new_channel()
    socket_bot.command("/health", "staging", barrier)
    final_report(socket_bot.slack, barrier)
    assert socket_bot.slack.channel_messages(channel) == []
    assert len([r for r in demo.requests() if r["path"] == "/healthz"]) == 1


def test_opening_the_home_tab_over_the_socket_publishes_the_home(socket_bot: SocketBot) -> None:
    viewer = "U0SOCKETHOME"
    envelope = socket_bot.socket.event(app_home_opened_event(viewer))
    assert socket_bot.acked(envelope).payload is None  # an event is acked bare, at once
    socket_bot.slack.wait_for(lambda fake: fake.home(viewer))
    (publish,) = socket_bot.slack.home_publishes(viewer)
    assert "*staging* — " in str(publish.args["view"])


def test_check_again_button_updates_the_same_message(
    socket_bot: SocketBot, demo: DemoService
) -> None:
    slack = socket_bot.slack
    channel = new_channel()
    socket_bot.command("/health", "staging", channel)
    first = final_report(slack, channel)

    demo.set_faults(healthz_status=503)
    updates_before = len(slack.calls_to("chat.update"))
    click = socket_bot.socket.block_actions(
        "health_recheck",
        "staging",
        channel_id=channel,
        message_ts=first["ts"],
        message=first,
        response_url=slack.response_url(),
    )
    assert socket_bot.acked(click).payload is None

    def rechecked(fake: SlackFake) -> dict[str, Any] | None:
        updates = fake.calls_to("chat.update")[updates_before:]
        final = [
            u.args
            for u in updates
            if (u.args["channel"], u.args["ts"]) == (channel, first["ts"])
            and "Unhealthy" in u.args.get("text", "")
        ]
        return final[-1] if final else None

    slack.wait_for(rechecked)
    assert len(slack.channel_messages(channel)) == 1


def test_metrics_are_served_in_socket_mode(socket_bot: SocketBot, demo: DemoService) -> None:
    channel = new_channel()
    socket_bot.command("/health", "local", channel)
    final_report(socket_bot.slack, channel)  # the ack's latency is recorded before work starts

    response = socket_bot.http.get(f"{socket_bot.url}/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "eventmesh_bot_build_info" in families
    acks = [
        s
        for s in families["eventmesh_bot_ack_seconds"].samples
        if s.name.endswith("_count") and s.labels["command"] == "/health"
    ]
    assert acks and acks[0].value >= 1


def test_reconnects_when_slack_refreshes_the_connection(
    socket_bot: SocketBot, demo: DemoService
) -> None:
    socket = socket_bot.socket
    opened_before = len(socket_bot.slack.calls_to("apps.connections.open"))
    old = socket.request_refresh()
    new = socket.wait_for_connection(old.number + 1)
    socket.wait_for(lambda _: not old.open)
    assert old.close_code == WS_CLOSE_OK
    assert len(socket_bot.slack.calls_to("apps.connections.open")) == opened_before + 1

    channel = new_channel()
    envelope, _ = socket_bot.command("/health", "staging", channel)
    assert envelope.connection == new.number
    assert "*staging* — Healthy" in report_text(final_report(socket_bot.slack, channel))
