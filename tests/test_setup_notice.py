"""The one setup message: posted when the first setup problem is found, edited in place as the
problems change (down to "nothing left to fix"), found again by a restarted bot. The real store
(SQLite), the real outbox and Web API chat against the Slack fake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Config
from bot.runbook.setup.checks import Problem
from bot.runbook.setup.problems import SetupProblems, check_this_machine
from bot.slack.outbox import Outbox
from bot.slack.setup.notice import SetupNotice
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import Store
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake

TOKEN = "xoxb-setup-notice-test"
ALERTS = "C0ALERTS"
KEY = Problem("ssh.key_file", "/nowhere/id_ed25519 does not exist")
HOST = Problem("environments.dev.hosts", "deploy@dev: cannot resolve dev (hosts)")


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    with SlackFake(bot_token=TOKEN) as running:
        yield running


def config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "slack": {"alerts_channel": ALERTS},
            "ssh": {"key_file": str(tmp_path / "id_ed25519")},
            "environments": {"dev": {"base_url": "http://dev:1", "hosts": ["deploy@dev"]}},
        }
    )


async def shown_now(notice: SetupNotice) -> None:
    """Until what the last change asked for went (the notice runs on its own task)."""
    await notice.close()


def run_bot(tmp_path: Path, fake: SlackFake, steps: list[list[Problem]]) -> None:
    """One bot's life: each step is what the sources report; the message follows."""
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")

    async def scenario() -> None:
        chat = SlackChat(create_web_client(TOKEN, fake.api_url, retries=False))
        outbox = Outbox(store, chat, paced=False)
        problems = SetupProblems()
        notice = SetupNotice(config(tmp_path), store, outbox, problems)
        try:
            for step in steps:
                problems.report("host:deploy@dev", [p for p in step if p is HOST])
                problems.report("this machine", [p for p in step if p is KEY])
                await shown_now(notice)
            notice.refresh()  # as start-up does once the checks have run
            await shown_now(notice)
        finally:
            await outbox.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_one_message_edited_in_place_until_nothing_is_left_and_after_a_restart(
    tmp_path: Path, fake: SlackFake
) -> None:
    run_bot(tmp_path, fake, [[], [KEY], [KEY, HOST], [KEY, HOST], [HOST]])
    (message,) = fake.channel_messages(ALERTS)
    text = shown(message)
    assert "1 setup problem to fix" in text
    assert "`environments.dev.hosts`: deploy@dev: cannot resolve dev" in text
    assert "ssh.key_file" not in text
    assert len(fake.calls_to("chat.postMessage")) == 1
    assert len(fake.calls_to("chat.update")) == 2  # two problems, then one: a repeat is no edit

    # Restarted, the bot finds its message and edits it: fixed, it says so.
    run_bot(tmp_path, fake, [[]])
    (message,) = fake.channel_messages(ALERTS)
    assert "Setup: nothing left to fix." in shown(message)
    assert len(fake.calls_to("chat.postMessage")) == 1


def test_nothing_wrong_posts_nothing_and_the_offline_check_names_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    problems = SetupProblems()
    caplog.set_level(logging.INFO)
    check_this_machine(config(tmp_path), problems, {})
    found = problems.current()
    assert [p.key for p in found] == ["ssh.key_file", "environments.dev.hosts[0]"]
    assert "does not exist" in caplog.text and "the key to fix: ssh.key_file" in caplog.text
    check_this_machine(config(tmp_path), problems, {})  # the same again: no new lines
    assert caplog.text.count("the key to fix: ssh.key_file") == 1
