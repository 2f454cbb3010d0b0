"""The outbox in process: the real store (SQLite), the real Web API chat (no retries of its
own) against the Slack fake in each of its fault modes, the delivery worker on the real clock.

What it must hold: a message Slack carried out but whose answer was lost is found by its key
and not sent again; nothing is lost while Slack is away, and it goes when Slack answers; an
outage is one log line each way; a reply past its usefulness is dropped, saying which command
it answered; a spent response_url becomes a DM; a late message says it is late, and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.slack.chat import Asked, ChatError, Message, answering
from bot.slack.delivery import Pending, Sent
from bot.slack.durable_chat import DurableChat
from bot.slack.outbox import Outbox
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import LANE_PAGE, NewDelivery, Store
from bot.telemetry import Telemetry
from tests.support.slack_fake import SlackFake

TOKEN = "xoxb-outbox-test"
CHANNEL = "C0INCIDENTS"
WAIT_S = 30.0


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    with SlackFake(bot_token=TOKEN) as running:
        yield running


def texts(fake: SlackFake, channel: str = CHANNEL) -> list[str]:
    return [m["text"] for m in fake.channel_messages(channel)]


def card(key: str = "INC-1/card", text: str = "INC-1 card") -> NewDelivery:
    return NewDelivery(key=key, kind="incident.card", lane=LANE_PAGE, channel=CHANNEL, text=text)


def run(
    tmp_path: Path,
    fake: SlackFake,
    body: Callable[[Outbox], Awaitable[None]],
    *,
    worker: bool = False,
    telemetry: Telemetry | None = None,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")

    async def scenario() -> None:
        chat = SlackChat(create_web_client(TOKEN, fake.api_url, retries=False))
        outbox = Outbox(store, chat, telemetry=telemetry, paced=False)
        if worker:
            outbox.start()
        try:
            await body(outbox)
        finally:
            await outbox.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


async def until(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Wait for a condition the worker brings about (checked as the loop runs, not by time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)
    return value


def test_a_post_whose_answer_was_lost_is_found_by_its_key_not_sent_again(
    tmp_path: Path, fake: SlackFake
) -> None:
    async def body(outbox: Outbox) -> None:
        fake.fault("drop")
        lost = await outbox.send(card())
        assert isinstance(lost, Pending) and lost.quiet
        assert texts(fake) == ["INC-1 card"]  # Slack did it; the bot cannot know
        fake.heal()
        outbox.health.next_probe = None  # no waiting for the probe's pace here
        again = await outbox.send(card())
        assert isinstance(again, Sent) and again.ref is not None
        (posted,) = fake.channel_messages(CHANNEL)
        assert again.ref.ts == posted["ts"]
        assert posted["metadata"]["event_payload"] == {"key": "INC-1/card"}
        # The thread line after it goes in its thread; a DM whose answer was lost, likewise.
        fake.fault("drop")
        line = NewDelivery(
            key="INC-1/thread/2", kind="incident.thread", lane=LANE_PAGE, channel=CHANNEL,
            thread_of="INC-1/card", text="paging level 2",
        )  # fmt: skip
        page = NewDelivery(
            key="INC-1/page/1/U0ONCALL", kind="incident.page", lane=LANE_PAGE,
            user_id="U0ONCALL", text="Paging you for INC-1",
        )  # fmt: skip
        for new in (line, page):
            assert isinstance(await outbox.send(new), Pending)
        fake.heal()
        outbox.health.next_probe = None
        for new in (line, page):
            assert isinstance(await outbox.send(new), Sent)

    run(tmp_path, fake, body)
    assert texts(fake) == ["INC-1 card", "paging level 2"]
    assert texts(fake, "D0ONCALL") == ["Paging you for INC-1"]
    looked = [c.method for c in fake.calls if c.method.startswith("conversations.")]
    assert "conversations.history" in looked and "conversations.replies" in looked
    assert fake.rejected == []


def test_a_refused_connection_is_not_in_doubt_and_a_5xx_is(tmp_path: Path, fake: SlackFake) -> None:
    async def body(outbox: Outbox) -> None:
        fake.fault("refuse")
        assert isinstance(await outbox.send(card("a", "refused first")), Pending)
        fake.fault("5xx")
        outbox.health.next_probe = None
        assert isinstance(await outbox.send(card("b", "503 first")), Pending)
        fake.heal()
        outbox.health.next_probe = None
        assert isinstance(await outbox.send(card("a", "refused first")), Sent)
        assert isinstance(await outbox.send(card("b", "503 first")), Sent)

    run(tmp_path, fake, body)
    assert texts(fake) == ["refused first", "503 first"]
    # Only the one that may have happened (a 5xx) was looked for before it went again.
    assert len(fake.calls_to("conversations.history")) == 1


@pytest.mark.parametrize("mode", ["5xx", "429", "ratelimited", "refuse", "drop"])
def test_while_slack_is_away_nothing_is_lost_and_it_all_goes_in_order_after(
    tmp_path: Path, fake: SlackFake, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = Telemetry()

    async def body(outbox: Outbox) -> None:
        fake.fault(mode, retry_after=1)
        for i in range(5):
            await outbox.send(card(f"INC-{i}/card", f"card {i}"))
        page = NewDelivery(
            key="INC-9/page", kind="incident.page", lane=LANE_PAGE, user_id="U0CTO", text="page"
        )
        await outbox.send(page)
        # All six wait (dropped answers too: in doubt, until the bot can look).
        await until(lambda: telemetry.registry.get_sample_value("eventmesh_bot_outbox_depth") == 6)
        assert telemetry.registry.get_sample_value("eventmesh_bot_outbox_oldest_seconds") >= 0
        assert telemetry.registry.get_sample_value("eventmesh_bot_slack_reachable") == 0
        fake.heal()
        await until(lambda: texts(fake, "D0CTO") and len(texts(fake)) == 5)
        await until(lambda: outbox.waiting == 0)

    with caplog.at_level(logging.INFO, logger="bot.slack.outbox"):
        run(tmp_path, fake, body, worker=True, telemetry=telemetry)
    assert texts(fake) == [f"card {i}" for i in range(5)]  # each once, in order
    assert texts(fake, "D0CTO") == ["page"]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.slack.outbox"]
    assert len([m for m in lines if "unreachable since" in m]) == 1, lines
    assert len([m for m in lines if "reachable again after" in m]) == 1, lines
    assert not any(r.exc_info for r in caplog.records), "no traceback for an outage"
    assert telemetry.registry.get_sample_value("eventmesh_bot_slack_reachable") == 1


def test_a_late_page_says_when_it_was_due_and_why(tmp_path: Path, fake: SlackFake) -> None:
    due = datetime.now(UTC) - timedelta(seconds=95)

    async def body(outbox: Outbox) -> None:
        page = NewDelivery(
            key="INC-1/page/2/U0LEAD", kind="incident.page", lane=LANE_PAGE, user_id="U0LEAD",
            text="Paging you for INC-1", blocks=[{"type": "section", "text": {
                "type": "mrkdwn", "text": "the card"}}], due_at=due,
        )  # fmt: skip
        fake.fault("5xx", status=503)
        assert isinstance(await outbox.send(page), Pending)
        fake.heal()
        outbox.health.next_probe = None
        assert isinstance(await outbox.send(page), Sent)

    run(tmp_path, fake, body)
    (posted,) = fake.channel_messages("D0LEAD")
    assert posted["text"].startswith("Paging you for INC-1 (due ")
    note = posted["blocks"][-1]["elements"][0]["text"]
    assert f"Due {due:%H:%M:%S} UTC, delayed by a Slack outage (HTTP 503)" in note


def test_a_reply_past_its_usefulness_is_dropped_naming_its_command(
    tmp_path: Path, fake: SlackFake, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(outbox: Outbox) -> None:
        chat = DurableChat(outbox, useful_for=timedelta(seconds=1))
        fake.fault("refuse")
        answering.set(Asked("/health", "staging", "U0ASKER", "C0OPS", None))
        with pytest.raises(ChatError) as caught:
            await asyncio.wait_for(chat.post("C0OPS", Message("report")), WAIT_S)
        assert caught.value.error == "expired"

    with caplog.at_level(logging.WARNING):
        run(tmp_path, fake, body, worker=True)
    assert "/health staging by U0ASKER in C0OPS" in caplog.text
    assert "no longer useful" in caplog.text


def test_a_reply_through_a_spent_response_url_goes_to_the_users_dm(
    tmp_path: Path, fake: SlackFake
) -> None:
    url = fake.response_url()
    for i in range(5):  # Slack's five uses, spent
        httpx.post(url, json={"text": str(i)}, timeout=5).raise_for_status()

    async def body(outbox: Outbox) -> None:
        chat = DurableChat(outbox)
        answering.set(Asked("/escalate", "status", "U0ASKER", "C0OPS", url))
        await chat.respond(url, Message("2 open incidents"))
        await until(lambda: texts(fake, "D0ASKER"))

    run(tmp_path, fake, body, worker=True)
    assert texts(fake, "D0ASKER") == ["2 open incidents"]


def test_an_update_waiting_is_replaced_by_a_newer_one(tmp_path: Path, fake: SlackFake) -> None:
    async def body(outbox: Outbox) -> None:
        chat = DurableChat(outbox)
        ref = await chat.post(CHANNEL, Message("checking"))
        fake.fault("5xx")
        for step in ("1 of 3", "2 of 3", "done"):
            await chat.update(ref, Message(step))
        fake.heal()
        await until(lambda: texts(fake) == ["done"])
        await until(lambda: outbox.waiting == 0)

    run(tmp_path, fake, body, worker=True)
    updates = [c for c in fake.calls_to("chat.update") if c.error is None]
    assert [c.args["text"] for c in updates] == ["done"]  # the superseded ones never went
