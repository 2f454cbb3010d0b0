"""Day one with the shipped config: setup problems named once, pages only where they belong.

The real bot in HTTP mode with a copy of config/eventmesh.yml (check intervals of a second,
its own channels, no SSH key, production pointed at a port nobody serves) and the Slack fake:
`local` is nowhere, dev and staging (host names that do not resolve) give a setup message and
unpaged alerts, production pages once. And a service whose /metrics lacks the configured
counter: one setup message, no alert. Every wait is for something to happen, or for the bot
to have run a number of check cycles — never for a time.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, BotProcess, DemoService, free_port, http_bot, new_channel
from tests.support.alerts import alert_posts, alerts_config, served
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake

WAIT_S = 45.0  # the machine is shared; the checks themselves take a moment
SETUP = "setup problem"
CYCLES_AFTER = 8  # check cycles run after the page: a second page or a stray alert shows


def shipped_copy(path: Path, alerts: str, incidents: str, production_url: str) -> Path:
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "eventmesh.yml").read_text())
    config["slack"] = {
        "alerts_channel": alerts,
        "incidents_channel": incidents,
        "approvals_channel": new_channel(),
    }
    for env in config["environments"].values():
        env["check_interval"] = "1s"
    config["environments"]["production"]["base_url"] = production_url
    config["ssh"]["key_file"] = str(path.parent / "no-such-key")
    config["ssh"]["known_hosts"] = str(path.parent / "known_hosts")
    config["metrics"]["dir"] = str(path.parent / "no-metrics-here")
    path.write_text(json.dumps(config, indent=2))
    return path


def check_cycles(bot: BotProcess) -> float:
    for family in text_string_to_metric_families(bot.metrics()):
        for sample in family.samples:
            if sample.name == "eventmesh_bot_check_cycles_total":
                return float(sample.value)
    return 0.0


def run_cycles(bot: BotProcess, count: int, timeout: float = WAIT_S) -> None:
    """Until the bot has run `count` more check cycles (its /metrics counts them)."""
    target = check_cycles(bot) + count
    deadline = time.monotonic() + timeout
    while check_cycles(bot) < target:
        assert time.monotonic() < deadline, f"{count} check cycles did not run in {timeout}s"
        time.sleep(0.2)  # polling the bot's counter: the condition, not a time


def top_level(slack: SlackFake, channel: str) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(channel) if "thread_ts" not in m]


def test_the_shipped_config_pages_for_production_only_and_names_setup_problems_once(
    tmp_path: Path, slack: SlackFake
) -> None:
    alerts, incidents = new_channel(), new_channel()
    production = f"http://127.0.0.1:{free_port()}"  # nobody answers there
    config = shipped_copy(tmp_path / "eventmesh.yml", alerts, incidents, production)
    with http_bot(tmp_path, slack, config) as bot:
        card = slack.wait_for(lambda f: next(iter(top_level(f, incidents)), None), timeout=WAIT_S)
        assert "production · Health check response" in shown(card)
        assert "SEV 1" in shown(card)
        setup = slack.wait_for(
            lambda f: next((m for m in top_level(f, alerts) if SETUP in shown(m)), None),
            timeout=WAIT_S,
        )
        for env in ("dev", "staging"):
            slack.wait_for(
                lambda f, env=env: any(
                    f"*{env}* · Health check response" in shown(m) and "Critical" in shown(m)
                    for m in top_level(f, alerts)
                ),
                timeout=WAIT_S,
            )
        run_cycles(bot, CYCLES_AFTER)

        # Production paged once; dev and staging opened no incident.
        assert len(top_level(slack, incidents)) == 1
        posts = top_level(slack, alerts)
        for message in posts:
            text = shown(message)
            if SETUP not in text and ("*dev*" in text or "*staging*" in text):
                assert "Incident INC-" not in text, text
        # The missing key file is one setup line, not a Memory alert per environment.
        assert not [m for m in posts if "Memory usage" in shown(m)]
        assert len([m for m in posts if SETUP in shown(m)]) == 1
        setup_text = shown(slack.wait_for(lambda f: _latest(f, alerts, setup["ts"])))
        assert "`ssh.key_file`" in setup_text and "does not exist" in setup_text
        assert setup_text.count("ssh.key_file") == 2  # the key and its fix, named once
        for host in ("dev.eventmesh.internal", "staging.eventmesh.internal"):
            assert host in setup_text
        # The console's demo is the console's: nothing here speaks of `local`.
        everything = [shown(m) for ch in (alerts, incidents) for m in slack.channel_messages(ch)]
        assert not [t for t in everything if re.search(r"\blocal\b", t)]
    log = bot.log.read_text()
    assert re.search(r"setup: .* does not exist .* the key to fix: ssh\.key_file", log)


def _latest(slack: SlackFake, channel: str, ts: str) -> dict[str, Any] | None:
    for message in slack.channel_messages(channel):
        if message.get("ts") == ts:
            return message
    return None


def test_a_service_without_the_configured_counter_is_one_setup_message_and_no_alert(
    tmp_path: Path, slack: SlackFake, demo: DemoService
) -> None:
    alerts, incidents = new_channel(), new_channel()
    config = alerts_config(
        tmp_path / "eventmesh.yml",
        {"staging": demo.url},
        alerts_channel=alerts,
        incidents_channel=incidents,
        metrics={
            "dir": str(tmp_path / "no-metrics-here"),
            "requests_counter": "checkout_requests_total",
        },
    )
    with http_bot(tmp_path, slack, config) as bot:
        message = slack.wait_for(
            lambda f: next((m for m in top_level(f, alerts) if SETUP in shown(m)), None),
            timeout=WAIT_S,
        )
        text = shown(message)
        assert "`metrics.requests_counter`" in text
        assert "/metrics has no checkout_requests_total" in text
        served(demo, "/metrics", 4)
        run_cycles(bot, CYCLES_AFTER)
        assert [call.args["text"] for call in alert_posts(slack, alerts)] == [message["text"]]
        assert top_level(slack, incidents) == []
