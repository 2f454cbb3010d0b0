"""Killed at every point that changes a host: SIGKILL, restart, and the host is right again.

The bot runs as a real process against the loopback sshd (tests/support/sshd.py) and a demo
service; EVENTMESH_TEST_KILL_AT names the exact point where it SIGKILLs itself (bot/process.py
`kill_point`), so no timing is guessed. A second bot on the same database then finds the run
(recovery.py), looks at the host and repairs it (bot/runbook/changes/repair.py). Each case
checks: the lock is free, the host is on a verified release or rolled back, the service runs,
the thread says what happened, nothing ran twice.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Config
from bot.store import Store
from tests.conftest import TEST_LIMITS, BotProcess, start_slack_bot, stop_process
from tests.support.deploy_env import (
    DemoTarget,
    backup_archive,
    demo_target,
    hand_made_install,
    install_release,
)
from tests.support.deploy_reports import text_of, wait_in_thread
from tests.support.slack_fake import SlackFake
from tests.support.sshd import Sshd

DEPLOYER = "U0DEPLOY1"
DEPLOY = "staging 2.0.0 --skip-tests"  # the tests are not what is killed

# (point, what is on the host first, the command, after the restart: the version served and
# words the thread says).
CASES = [
    ("deploy:locked", "release", DEPLOY, "1.0.0", "was interrupted"),
    ("adopt:8", "hand-made", DEPLOY, "1.0.0", "relinked bin"),
    ("upload:sent", "release", DEPLOY, "1.0.0", "untouched"),
    ("unpack:2", "release", DEPLOY, "1.0.0", "removed releases/.partial-"),
    ("switched", "release", DEPLOY, "1.0.0", "rolled back to v1.0.0"),
    ("verify", "release", DEPLOY, "2.0.0", "verified now, healthy"),
    ("rollback:stopped", "two", "staging", "1.0.1", "the service was down"),
    ("switch:1", "two", "staging", "1.0.0", "the service was down"),
    ("rollback:start", "two", "staging", "1.0.0", "the service was down"),
    ("verify", "two", "staging", "1.0.0", "healthy"),
    ("restore:2", "two", "staging BACKUP", "1.0.1", "removed releases/.partial-"),
]


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "staging")
    yield target
    target.stop()


def _config(tmp_path: Path, sshd: Sshd, target: DemoTarget) -> tuple[Path, Config]:
    env = target.environment(verify_timeout="15s")
    del env["transport"]
    env["hosts"] = [str(sshd.host)]
    ssh = {
        "key_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts()),
        "connect_timeout": "5s",
        "command_timeout": "60s",
    }
    settings = {
        "ssh": ssh,
        "access": {"deployers": [DEPLOYER]},
        "alerts": {"scheduled_checks": False},
        "limits": TEST_LIMITS,
        "environments": {"staging": env},
    }
    path = tmp_path / "eventmesh.yml"
    path.write_text(json.dumps(settings))
    return path, Config.model_validate(settings)


def _prepare(kind: str, config: Config, target: DemoTarget) -> str | None:
    """What the host runs before the change; a backup's name for the restore case."""
    if kind == "hand-made":
        hand_made_install(target, "1.0.0")
    else:
        install_release(config, "staging", "1.0.0")
        if kind == "two":
            install_release(config, "staging", "1.0.1")
    subprocess.run(shlex.split(target.supervise("start")), check=True, capture_output=True)
    if kind != "two":
        return None
    return backup_archive(target, "0.9.0", datetime.now(UTC) - timedelta(days=1)).name


def _served(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


@pytest.mark.parametrize(
    ("point", "kind", "text", "serves", "said"),
    CASES,
    ids=[f"{'deploy' if c[2] == DEPLOY else 'rollback'}-{c[0]}" for c in CASES],
)
def test_killed_at_a_point_the_restart_puts_the_host_right(
    tmp_path: Path,
    slack: SlackFake,
    sshd: Sshd,
    target: DemoTarget,
    point: str,
    kind: str,
    text: str,
    serves: str,
    said: str,
) -> None:
    config_path, config = _config(tmp_path, sshd, target)
    backup = _prepare(kind, config, target)
    command = "/deploy" if text.startswith("staging 2") else "/rollback"
    text = text.replace("BACKUP", backup or "")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_slack_bot(first_dir, slack, config_path, EVENTMESH_TEST_KILL_AT=point)
    second: BotProcess | None = None
    try:
        channel = first.command(command, text, user_id=DEPLOYER).channel
        assert first.process.wait(timeout=120) == -9, first.log.read_text()[-3000:]
        (message,) = [m for m in slack.channel_messages(channel) if "thread_ts" not in m][:1]

        second = start_slack_bot(second_dir, slack, config_path, database_url=first.database_url)
        told = wait_in_thread(slack, channel, message["ts"], "was interrupted", timeout=90)
        assert "The lock on staging is released" in text_of(told)
        if said != "was interrupted":
            found = wait_in_thread(slack, channel, message["ts"], said, timeout=90)
            assert "What the restart found on the hosts" in text_of(found)

        store = Store(first.database_url)
        try:
            assert store.environment_lock("staging") is None
            (run,) = store.deployments("staging")
            assert run.state == "interrupted", run
        finally:
            store.close()
        health = _served(target)
        assert health["status"] == "healthy" and health["version"] == serves, health
        install = target.install_dir
        assert (install / "bin").is_symlink() and (install / "bin" / "eventmesh-api").exists()
        assert not list(install.glob("releases/.partial-*"))
        assert not list(install.glob("packages/.*.upload-*"))
        # Nothing ran twice: one install per release, one run recorded, and the host's log
        # marks the version it serves good or the one it left bad — never both for one.
        written = install / "releases.log"  # none yet when the adoption was cut short
        lines = written.read_text().splitlines() if written.exists() else []
        log = [json.loads(line) for line in lines]
        installed = [e["release"] for e in log if e["event"] == "installed"]
        assert len(installed) == len(set(installed))
        if said == "rolled back to v1.0.0":
            assert any(e["event"] == "bad" and e["release"].endswith("-2.0.0") for e in log)
        if said == "verified now, healthy":
            assert any(e["event"] == "good" and e["release"].endswith("-2.0.0") for e in log)
    finally:
        for bot in (first, second):
            if bot is not None:
                bot.http.close()
                stop_process(bot.process)
