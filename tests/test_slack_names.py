"""Channels and people written by name in the config (#ops-incidents, @alice, an email),
resolved through the Slack fake by the real bot at start, remembered for a start while Slack
is away, and a name Slack does not know refused as a config error naming its key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    bot_database_url,
    clean_env,
    http_bot,
    slack_bot_env,
    spawn_bot,
    write_config,
)
from tests.support.slack_fake import SlackFake

EXIT_TIMEOUT_S = 60


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    """A workspace with a few channels and people, paged two at a time."""
    with SlackFake(bot_token=BOT_TOKEN) as fake:
        for i in range(5):
            fake.add_channel(f"random-{i}", f"C0RANDOM{i}")
        fake.add_channel("ops-incidents", "C0OPSINC")
        fake.add_channel("ops-alerts", "C0OPSALERTS")
        fake.add_person("U0BOB", "bob", display_name="Bobby")
        fake.add_person("U0ALICE", "alice", "alice@example.com", display_name="Alice")
        fake.add_person("U0CAROL", "carol", "carol@example.com")
        fake.page_size = 2  # every list takes several pages
        yield fake


def named_config(path: Path, dead_url: str, incidents: str = "#ops-incidents") -> Path:
    return write_config(
        path,
        {"dev": dead_url},
        slack={"alerts_channel": "#ops-alerts", "incidents_channel": incidents},
        access={"deployers": ["@bob", "U0DEPLOY1"], "approvers": ["carol@example.com"]},
        escalation={
            "levels": [
                {"name": "On-call", "users": ["alice@example.com"], "timeout": "10m"},
                {"name": "Lead", "users": ["@Bobby"]},
            ]
        },
    )


def test_names_resolve_at_start_and_the_bot_posts_and_pages_by_their_ids(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = named_config(tmp_path / "eventmesh.yml", dead_url)
    with http_bot(tmp_path, slack, config) as bot:
        sent = bot.command("/escalate", "orders API down --sev 2", user_id="U0USER")
        assert sent.response.status_code == 200

        card = slack.wait_for(
            lambda f: next(
                (m for m in f.channel_messages("C0OPSINC") if m["text"].startswith("INC-1 ")),
                None,
            )
        )
        page = slack.wait_for(
            lambda f: next(
                (
                    c
                    for c in f.calls_to("chat.postMessage")
                    if c.args.get("channel") == "D0ALICE"
                    and str(c.args.get("text", "")).startswith("Paging you for INC-1 ")
                ),
                None,
            )
        )
        log = bot.log.read_text()

    assert card["text"].startswith("INC-1 ")
    assert page.error is None
    listed = slack.calls_to("conversations.list")
    assert len(listed) >= 2  # followed the cursor past the first page
    assert all(c.args.get("types") == "public_channel,private_channel" for c in listed)
    assert [c.args.get("email") for c in slack.calls_to("users.lookupByEmail")] in (
        ["alice@example.com", "carol@example.com"],
        ["carol@example.com", "alice@example.com"],
    )
    assert "#ops-incidents → C0OPSINC" in log
    assert "@Bobby → U0BOB" in log  # a display name
    # Nothing but ids reached Slack: no channel or user argument is a name.
    for call in slack.calls:
        for key in ("channel", "user", "users"):
            value = str(call.args.get(key) or "")
            assert not value.startswith(("#", "@")) and "@" not in value, call


def test_a_restart_while_slack_is_away_uses_the_names_the_last_start_resolved(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = named_config(tmp_path / "eventmesh.yml", dead_url)
    database_url = bot_database_url(tmp_path)
    for workdir in ("first", "second"):
        (tmp_path / workdir).mkdir()
    with http_bot(tmp_path / "first", slack, config, database_url=database_url):
        pass

    slack.fault("5xx")
    with http_bot(tmp_path / "second", slack, config, database_url=database_url) as bot:
        slack.heal()
        sent = bot.command("/escalate", "payments slow --sev 3", user_id="U0USER")
        assert sent.response.status_code == 200
        slack.wait_for(
            lambda f: any(m["text"].startswith("INC-1 ") for m in f.channel_messages("C0OPSINC"))
        )
        log = bot.log.read_text()

    assert "using the ids an earlier start resolved" in log
    assert "#ops-incidents → C0OPSINC" in log


def test_a_name_slack_does_not_know_stops_the_start_naming_its_key(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = named_config(tmp_path / "eventmesh.yml", dead_url, incidents="#ops-incidnets")
    env = slack_bot_env(slack, config, bot_database_url(tmp_path))
    process, _url, log = spawn_bot(tmp_path, **env)
    try:
        code = process.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        process.kill()
    text = log.read_text()

    assert code == 2, text
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert any(
        "slack.incidents_channel: no channel #ops-incidnets that the bot can see" in line
        for line in errors
    ), text
    assert "Traceback" not in text
    assert not slack.calls_to("chat.postMessage")  # it never served


def test_a_slack_that_is_away_with_nothing_remembered_stops_the_start(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = named_config(tmp_path / "eventmesh.yml", dead_url)
    slack.fault("refuse")
    process, _url, log = spawn_bot(
        tmp_path, **slack_bot_env(slack, config, bot_database_url(tmp_path))
    )
    try:
        code = process.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        process.kill()
    text = log.read_text()

    assert code == 2, text
    assert "access.approvers[0]: cannot be resolved: Slack is unreachable" in text
    assert "Traceback" not in text


def test_check_config_live_resolves_names_and_names_the_key_of_an_unknown_one(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = named_config(tmp_path / "eventmesh.yml", dead_url)
    config.write_text(config.read_text().replace("carol@example.com", "nobody@example.com"))

    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check-config", str(config), "--live"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
        ),
    )

    assert done.returncode == 2
    assert (
        "access.approvers[0]: no member of this workspace has the email nobody@example.com"
        in done.stderr.splitlines()
    )
    assert "Slack: #ops-incidents is C0OPSINC" in done.stdout
    assert "Slack: @bob is U0BOB" in done.stdout
    assert "#ops" not in done.stderr  # the names that resolve are checked by their ids
