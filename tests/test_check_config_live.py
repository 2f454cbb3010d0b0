"""`eventmesh-bot check-config --live`, run as a person runs it: a subprocess, against the Slack
fake, the loopback sshd, a demo EventMesh service and the GitHub fake."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BOT_TOKEN, SIGNING_SECRET, DemoService, clean_env
from tests.support.github_fake import GitHubFake
from tests.support.slack_fake import SlackFake
from tests.support.sshd import Sshd

CI_TOKEN = "ghp_check_config_live_token"
TOKEN_VARIABLE = "CHECK_CONFIG_LIVE_GITHUB_TOKEN"


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake(bot_token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    with GitHubFake(token=CI_TOKEN) as fake:
        yield fake


def write_config(
    path: Path, sshd: Sshd, demo: DemoService, github: GitHubFake, hosts: list[str]
) -> Path:
    config: dict[str, Any] = {
        "slack": {"alerts_channel": "C0ALERTS", "incidents_channel": "C0INCIDENTS"},
        "access": {"deployers": ["U0DEPLOY1"], "approvers": ["U0APPROVER1", "U0APPROVER2"]},
        "ssh": {
            "key_file": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts()),
            "connect_timeout": "5s",
        },
        "environments": {"staging": {"base_url": demo.url, "hosts": hosts}},
        "escalation": {"levels": [{"name": "On-call", "users": ["U0ONCALL"]}]},
        "ci": {
            "provider": "github",
            "repository": github.repository,
            "workflow": github.workflow,
            "api_url": github.url,
            "token_env": TOKEN_VARIABLE,
        },
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def check_live(config: Path, slack: SlackFake, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "check-config", str(config), "--live"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
            **env,
        ),
    )


def test_four_setup_problems_are_four_lines_naming_the_key_and_the_fix(
    tmp_path: Path, sshd: Sshd, demo: DemoService, slack: SlackFake, github: GitHubFake
) -> None:
    slack.missing.update({"C0INCIDENTS", "U0APPROVER2"})
    pinned = f"{sshd.user}@127.0.0.1:{sshd.port}"
    unpinned = f"{sshd.user}@localhost:{sshd.port}"  # the same sshd, under a name not pinned
    config = write_config(tmp_path / "eventmesh.yml", sshd, demo, github, [pinned, unpinned])

    result = check_live(config, slack)  # and the CI token's variable is not set

    assert result.returncode == 2, result.stdout + result.stderr
    problems = result.stderr.splitlines()
    assert len(problems) == 4, result.stderr
    by_key = {line.split(": ", 1)[0]: line for line in problems}
    assert set(by_key) == {
        "environments.staging.hosts[1]",
        "ci.token_env",
        "slack.incidents_channel",
        "access.approvers[1]",
    }, problems
    assert f"ssh-keyscan -p {sshd.port} localhost >> " in by_key["environments.staging.hosts[1]"]
    assert f"{TOKEN_VARIABLE} is not set" in by_key["ci.token_env"]
    assert "no channel C0INCIDENTS" in by_key["slack.incidents_channel"]
    assert "no user U0APPROVER2" in by_key["access.approvers[1]"]
    assert "Traceback" not in result.stdout + result.stderr
    # What did check out is said too: the pinned host let the key in, the counter was found.
    assert "SSH: 1 of 2 host(s) reached" in result.stdout
    assert "error rate from eventmesh_http_requests_total" in result.stdout
    assert "4 problem(s) to fix" in result.stdout
    asked = {call.args.get("channel") for call in slack.calls_to("conversations.info")}
    assert asked == {"C0ALERTS", "C0INCIDENTS"}
    assert github.requests == []  # no token to try


def test_a_config_that_works_is_all_good_and_says_what_it_found(
    tmp_path: Path, sshd: Sshd, demo: DemoService, slack: SlackFake, github: GitHubFake
) -> None:
    pinned = f"{sshd.user}@127.0.0.1:{sshd.port}"
    config = write_config(tmp_path / "eventmesh.yml", sshd, demo, github, [pinned])

    result = check_live(config, slack, **{TOKEN_VARIABLE: CI_TOKEN})

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: OK (1 environment: staging)"
    assert lines[-1].startswith("all good")
    found = "\n".join(lines)
    assert "Slack: SLACK_BOT_TOKEN is @eventmesh-bot in EventMesh Test" in found
    assert "SSH: 1 of 1 host(s) reached" in found
    assert "staging: " in found and "eventmesh_http_requests_total (status in code" in found
    assert "CI: ci.yml of eventmesh/eventmesh read with $" in found
    assert CI_TOKEN not in result.stdout


def test_a_channel_the_bot_is_not_in_and_a_refused_token(
    tmp_path: Path, sshd: Sshd, demo: DemoService, slack: SlackFake, github: GitHubFake
) -> None:
    slack.not_joined.add("C0ALERTS")
    pinned = f"{sshd.user}@127.0.0.1:{sshd.port}"
    config = write_config(tmp_path / "eventmesh.yml", sshd, demo, github, [pinned])

    result = check_live(config, slack, **{TOKEN_VARIABLE: "ghp_wrong"})

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "slack.alerts_channel: the bot is not in #c0alerts (C0ALERTS) — "
        "/invite @eventmesh-bot in #c0alerts",
        f"ci: GitHub refused the request (HTTP 401): check the token in ${TOKEN_VARIABLE}",
    ]
