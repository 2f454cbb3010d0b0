"""The Slack fake in trouble, and message metadata as Slack keeps it, over real HTTP with
slack_sdk's own clients: what the delivery tests rely on (tests/support/slack_faults.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from tests.support.slack_fake import SlackFake

TOKEN = "xoxb-test-token"
KEY = {"event_type": "eventmesh_outbox", "event_payload": {"key": "INC-1/card"}}


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    with SlackFake(TOKEN) as running:
        yield running


@pytest.fixture
def client(fake: SlackFake) -> WebClient:
    """No retry handlers: each call is one request, as the bot's delivery makes them."""
    return WebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[], timeout=5)


def test_5xx_answers_the_status_and_carries_nothing_out(fake: SlackFake, client: WebClient) -> None:
    fake.fault("5xx", status=503)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="card")
    assert caught.value.response.status_code == 503
    assert fake.messages == {}
    (call,) = fake.calls_to("chat.postMessage")
    assert (call.status, call.error) == (503, "HTTP 503")
    fake.heal()
    assert client.chat_postMessage(channel="C0OPS", text="card")["ok"]
    assert fake.rejected == []  # a fault is not the bot's fault


def test_429_carries_retry_after_and_ratelimited_is_ok_false_without_it(
    fake: SlackFake, client: WebClient
) -> None:
    fake.fault("429", retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="t")
    response = caught.value.response
    assert (response.status_code, response["error"]) == (429, "ratelimited")
    assert {k.lower(): v for k, v in response.headers.items()}["retry-after"] in ("7", ["7"])

    fake.fault("ratelimited")
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="t")
    response = caught.value.response
    assert (response.status_code, response["ok"], response["error"]) == (200, False, "ratelimited")
    assert "retry-after" not in {k.lower() for k in response.headers}
    assert fake.messages == {}


def test_refuse_stops_listening_and_heal_listens_again_on_the_same_port(
    fake: SlackFake, client: WebClient
) -> None:
    url = fake.api_url
    fake.fault("refuse")
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "auth.test", timeout=2)
    fake.heal()
    assert fake.api_url == url
    assert client.auth_test()["ok"]


def test_drop_carries_the_call_out_and_closes_without_an_answer(
    fake: SlackFake, client: WebClient
) -> None:
    fake.fault("drop")
    with pytest.raises(Exception) as caught:  # urllib's RemoteDisconnected, whatever wraps it
        client.chat_postMessage(channel="C0OPS", text="card", metadata=KEY)
    assert not isinstance(caught.value, SlackApiError)
    (posted,) = fake.channel_messages("C0OPS")  # it happened all the same
    assert posted["text"] == "card"
    (call,) = fake.calls_to("chat.postMessage")
    assert call.answered is False and call.error is None


def test_response_urls_fail_with_the_api(fake: SlackFake) -> None:
    url = fake.response_url()
    fake.fault("5xx", status=500)
    assert WebhookClient(url).send(text="late").status_code == 500
    fake.fault("429", retry_after=3)
    sent = WebhookClient(url).send(text="late")
    assert sent.status_code == 429 and sent.headers.get("Retry-After") in ("3", ["3"])
    assert fake.responses == []
    fake.fault("drop")
    with pytest.raises(Exception):  # noqa: B017 - the connection is closed, no HTTP answer
        WebhookClient(url, retry_handlers=[]).send(text="on time, unanswered")
    assert [r["text"] for r in fake.responses] == ["on time, unanswered"]
    assert len(fake.faulted) == 3


def test_a_timed_fault_heals_by_itself(fake: SlackFake, client: WebClient) -> None:
    fake.fault("refuse", seconds=0.3)
    assert fake.faulty
    fake.wait_for(lambda f: not f.faulty, timeout=5)
    assert client.auth_test()["ok"]
    (period,) = fake.faults
    assert period.mode == "refuse" and period.ended is not None
    assert period.ended - period.started >= 0.25


def test_unknown_modes_and_statuses_are_refused(fake: SlackFake) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        fake.fault("flaky")
    with pytest.raises(ValueError, match="5xx status"):
        fake.fault("5xx", status=404)


# -- metadata and history ----------------------------------------------------------------------


def test_history_shows_metadata_only_when_asked_and_no_thread_replies(
    fake: SlackFake, client: WebClient
) -> None:
    card = client.chat_postMessage(channel="C0OPS", text="card", metadata=KEY)
    client.chat_postMessage(channel="C0OPS", text="line", thread_ts=card["ts"])
    client.chat_postMessage(channel="C0OPS", text="later")

    plain = client.conversations_history(channel="C0OPS")
    assert [m["text"] for m in plain["messages"]] == ["later", "card"]  # newest first
    assert all("metadata" not in m for m in plain["messages"])

    full = client.conversations_history(channel="C0OPS", include_all_metadata=True)
    assert full["messages"][1]["metadata"] == KEY
    assert "metadata" not in full["messages"][0]

    thread = client.conversations_replies(channel="C0OPS", ts=card["ts"], include_all_metadata=True)
    assert [m["text"] for m in thread["messages"]] == ["card", "line"]
    assert thread["messages"][0]["metadata"] == KEY


def test_history_pages_with_a_cursor_and_honours_oldest(fake: SlackFake, client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel="C0OPS", text=str(i))["ts"] for i in range(5)]
    first = client.conversations_history(channel="C0OPS", limit=2)
    assert [m["text"] for m in first["messages"]] == ["4", "3"] and first["has_more"]
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_history(channel="C0OPS", limit=2, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["2", "1"]
    since = client.conversations_history(channel="C0OPS", oldest=stamps[2])
    assert [m["text"] for m in since["messages"]] == ["4", "3"]


def test_bad_metadata_and_unknown_threads_are_refused_like_slack(
    fake: SlackFake, client: WebClient
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="t", metadata={"event_type": "x"})
    assert caught.value.response["error"] == "invalid_metadata_format"
    with pytest.raises(SlackApiError) as caught:
        client.conversations_replies(channel="C0OPS", ts="1.000001")
    assert caught.value.response["error"] == "thread_not_found"
