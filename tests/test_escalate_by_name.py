"""`/escalate ack|resolve INC-<n>`: an incident's buttons, for whoever lost its message — the
real bot in HTTP mode, signed commands, the Slack fake."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import BotProcess
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake

APPROVER = "U0APPROVER1"  # bot_config's approver: may press any incident's buttons


def answer(slack: SlackFake, words: str) -> dict[str, Any]:
    def found(fake: SlackFake) -> dict[str, Any] | None:
        return next((r for r in fake.responses if words in r["text"]), None)

    return slack.wait_for(found)


def open_incident(bot: BotProcess, summary: str) -> tuple[str, str]:
    """(its name, the channel of its message): the shared bot pages nobody and posts the
    incident where /escalate was typed."""
    sent = bot.command("/escalate", summary)
    cards = bot.slack.wait_for(lambda fake: fake.channel_messages(sent.channel))
    name = re.match(r"(INC-\d+) ", cards[0]["text"])
    assert name is not None, cards[0]["text"]
    return name.group(1), sent.channel


def test_ack_and_resolve_by_name_follow_the_buttons_rules(bot: BotProcess) -> None:
    name, channel = open_incident(bot, "queue consumers stuck")

    bot.command("/escalate", f"ack {name}", user_id="U0STRANGER")
    refused = answer(bot.slack, f"Only the people paged for {name}")
    assert refused["response_type"] == "ephemeral"

    bot.command("/escalate", f"ack {name.lower()}", user_id=APPROVER)
    answer(bot.slack, f"{name} acknowledged: its messages show it.")
    card = bot.slack.wait_for(
        lambda fake: next(
            (m for m in fake.channel_messages(channel) if "Acknowledged" in shown(m)), None
        )
    )
    assert f"<@{APPROVER}>" in shown(card)

    bot.command("/escalate", f"ack {name}", user_id=APPROVER)
    # Acknowledged already: who and when said, not redone.
    answer(bot.slack, f"{name} is acknowledged already: <@{APPROVER}> acknowledged it at ")

    bot.command("/escalate", f"resolve {name}", user_id=APPROVER)
    answer(bot.slack, f"{name} resolved: its messages show it.")
    bot.slack.wait_for(
        lambda fake: next(
            (m for m in fake.channel_messages(channel) if "Resolved" in shown(m)), None
        )
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ack", "Name the incident: `/escalate ack INC-<n>`"),
        ("resolve 12", "Name the incident: `/escalate resolve INC-<n>`"),
    ],
)
def test_an_action_without_an_incident_name_gets_the_usage(
    bot: BotProcess, text: str, problem: str
) -> None:
    reply = bot.command("/escalate", text).response.json()
    assert reply["response_type"] == "ephemeral"
    assert problem in reply["text"]
    assert "/escalate ack|resolve INC-<n>" in reply["text"]


def test_an_unknown_incident_is_said_and_nothing_changes(bot: BotProcess) -> None:
    bot.command("/escalate", "resolve INC-987654", user_id=APPROVER)
    answer(bot.slack, "There is no incident INC-987654.")
