"""/health <env> resources end to end: psutil for `local`, /proc over SSH for a host.

The SSH host is the real sshd on loopback (tests/support/sshd.py): it runs on this machine,
so its figures must agree with psutil here too; the bot's own log shows they were read over
SSH, from that host's /proc.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import TEST_LIMITS, BotProcess, http_bot
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, header_of, report_text, stop_value
from tests.support.health_reports import first_message as watch_message
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd

GIB = 1024**3
FIGURES = re.compile(
    r"(?P<target>\S+) CPU (?P<cpu>[\d.]+)% \((?P<cpu_level>\w+)\), memory (?P<memory>[\d.]+)% "
    r"\((?P<memory_level>\w+)\), disk (?P<disk>[\d.]+)%, load (?P<load>[\d.]+)"
)


@pytest.fixture(scope="module")
def resources_bot(
    tmp_path_factory: pytest.TempPathFactory, slack: SlackFake, sshd: Sshd, dead_url: str
) -> Iterator[BotProcess]:
    tmp = tmp_path_factory.mktemp("resources-bot")
    settings = sshd.settings()
    config = {
        "environments": {
            "local": {
                "base_url": dead_url,
                "transport": "local",
                "install_dir": str(tmp),
                "check_interval": "1s",
            },
            "staging": {
                "base_url": dead_url,
                "hosts": [str(sshd.host)],
                "install_dir": str(tmp / "not" / "yet"),
                "check_interval": "1s",
            },
        },
        "alerts": {"scheduled_checks": False},  # only the commands read these hosts
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "ssh": {
            "key_file": str(settings.key_file),
            "known_hosts": str(settings.known_hosts),
            "connect_timeout": "5s",
            "command_timeout": "60s",
        },
    }
    path = tmp / "eventmesh.yml"
    path.write_text(json.dumps(config))
    # DEBUG: the SSH transport logs each command it ran on a host, with its exit status.
    with http_bot(tmp, slack, path, LOG_LEVEL="DEBUG") as bot:
        yield bot


@pytest.fixture
def burner() -> Iterator[int]:
    """A process keeping one CPU busy: it must top the list of processes by CPU."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def snapshot_of(bot: BotProcess, env: str) -> dict[str, Any]:
    sent = bot.command("/health", f"{env} resources")
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    return bot.slack.wait_for(lambda fake: watch_message(fake, sent.channel), timeout=30)


def processes(message: dict[str, Any]) -> list[tuple[int, float, str]]:
    """(pid, CPU %, name) rows of the message's top-process tables."""
    rows = re.findall(r"^\s*(\d+)\s+([\d.]+)\s+[\d.]+\s+(\S.*)$", report_text(message), re.M)
    return [(int(pid), float(cpu), name.rstrip("`")) for pid, cpu, name in rows]


def assert_figures_match_psutil(message: dict[str, Any], target: str, burner: int) -> None:
    found = FIGURES.search(message["text"])
    assert found is not None, message["text"]
    assert found["target"] == target
    memory = psutil.virtual_memory()
    assert float(found["memory"]) == pytest.approx(memory.percent, abs=3)
    disk_path = re.search(r"disk [\d.]+% of `([^`]+)`", report_text(message))
    assert disk_path is not None
    assert float(found["disk"]) == pytest.approx(psutil.disk_usage(disk_path[1]).percent, abs=1)
    assert float(found["load"]) == pytest.approx(psutil.getloadavg()[0], abs=1.5)
    text = report_text(message)
    assert f"of {memory.total / GIB:.1f} GiB" in text
    assert f"of {psutil.cpu_count()} CPUs" in text
    # The busy process is on top (or near it: the machine is shared) with a CPU's worth.
    rows = processes(message)
    assert len(rows) == 5
    busy = [cpu for pid, cpu, _ in rows if pid == burner]
    assert busy and busy[0] >= 30, rows
    assert block_kit_errors(message["blocks"]) == []


def test_local_resources_match_psutil(resources_bot: BotProcess, burner: int) -> None:
    message = snapshot_of(resources_bot, "local")
    assert header_of(message) == "Resources · local"
    assert_figures_match_psutil(message, "local", burner)
    assert not any(b["type"] == "actions" for b in message["blocks"])  # a snapshot: no Stop


def test_a_hosts_resources_come_from_its_proc_over_ssh(
    resources_bot: BotProcess, sshd: Sshd, burner: int
) -> None:
    target = str(sshd.host)
    message = snapshot_of(resources_bot, "staging")
    assert header_of(message) == "Resources · staging"
    assert_figures_match_psutil(message, target, burner)
    # The install_dir does not exist yet: its nearest existing ancestor's disk is measured.
    assert f"of `{resources_bot.log.parent}`" in report_text(message)
    # Read on the host, over SSH: the transport logged the probe it ran there.
    log = resources_bot.log.read_text()
    probe = re.search(
        rf"{re.escape(target)}: exit 0 in [\d.]+s: m=@@eventmesh-probe-\w+\n(.*\n){{12}}", log
    )
    assert probe is not None, log[-3000:]
    assert "cat /proc/meminfo" in probe[0] and "grep '^cpu' /proc/stat" in probe[0]
    assert "Accepted publickey" in sshd.log_text()


def test_a_resources_watch_keeps_one_message_and_sums_up(resources_bot: BotProcess) -> None:
    slack = resources_bot.slack
    sent = resources_bot.command("/health", "staging resources 3s")
    channel = sent.channel

    def summary(fake: SlackFake) -> dict[str, Any] | None:
        message = watch_message(fake, channel)
        return message if message and header_of(message).startswith("Resources watch") else None

    final = slack.wait_for(summary, timeout=30)
    assert header_of(final) == "Resources watch of staging · done"
    snapshots = re.search(r"(\d+) snapshots?", final["text"])
    assert snapshots is not None and 2 <= int(snapshots[1]) <= 3
    text = report_text(final)
    assert re.search(r"CPU min [\d.]+% · mean [\d.]+% · max [\d.]+% \(\w+\)", text)
    assert re.search(r"memory min [\d.]+% · mean [\d.]+% · max [\d.]+% \(\w+\)", text)
    assert "ran its full time" in final["text"]
    posts = [c for c in slack.calls_to("chat.postMessage") if c.args["channel"] == channel]
    assert len(posts) == 1
    assert block_kit_errors(final["blocks"]) == []


def test_stop_ends_a_resources_watch(resources_bot: BotProcess) -> None:
    slack = resources_bot.slack
    sent = resources_bot.command("/health", "local resources 1h")
    channel = sent.channel
    first = slack.wait_for(lambda fake: watch_message(fake, channel), timeout=30)
    assert header_of(first) == "Watching resources · local"
    assert re.search(r"CPU `[▁▂▃▄▅▆▇█]+`  memory `[▁▂▃▄▅▆▇█]+`", report_text(first))
    resources_bot.press(
        # its starter (issue 16: a watch is stopped by its starter or a responder, not anyone)
        "watch_stop",
        stop_value(first),
        channel=channel,
        message_ts=first["ts"],
        user_id="U0USER",
    )
    final = slack.wait_for(
        lambda fake: "· stopped" in header_of(watch_message(fake, channel) or {}), timeout=30
    )
    assert "stopped by <@U0USER>" in watch_message(slack, channel)["text"]  # type: ignore[index]
    assert final


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("all resources", "follows one environment"),
        ("staging resources 2h", "at most 1h"),
        ("staging resources soon", "not a duration"),
        ("nosuch resources", "Unknown environment"),
    ],
)
def test_bad_resources_requests_get_usage(
    resources_bot: BotProcess, text: str, problem: str
) -> None:
    sent = resources_bot.command("/health", text)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert problem in reply["text"]
    assert "/health <env> resources [duration]" in reply["text"]


def test_an_unreachable_host_is_named_not_fatal(
    tmp_path: Path, slack: SlackFake, sshd: Sshd
) -> None:
    """A host that refuses the connection is a line in the message; the others still show."""
    settings = sshd.settings()
    config = {
        "environments": {
            "staging": {
                "base_url": "http://127.0.0.1:1",
                "hosts": [str(sshd.host), "deploy@127.0.0.1:1"],
                "check_interval": "1s",
            }
        },
        "alerts": {"scheduled_checks": False},  # only the commands read these hosts
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "ssh": {
            "key_file": str(settings.key_file),
            "known_hosts": str(settings.known_hosts),
            "connect_timeout": "5s",
        },
    }
    path = tmp_path / "eventmesh.yml"
    path.write_text(json.dumps(config))
    with http_bot(tmp_path, slack, path) as bot:
        message = snapshot_of(bot, "staging")
    text = report_text(message)
    assert f"*{sshd.host}* — CPU" in text
    assert re.search(r":red_circle: \*deploy@127\.0\.0\.1:1\* — cannot be read: .*refused", text)
    assert "deploy@127.0.0.1:1 cannot be read" in message["text"]
