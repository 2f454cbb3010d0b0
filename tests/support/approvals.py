"""Walking a production approval request the way /deploy and /rollback tests both need it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import BotProcess
from tests.support.deploy_reports import buttons, responses_so_far, text_of, wait_for_response
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.slack_fake import SlackFake

# The people in the deploy and rollback tests' configs.
DEPLOYER, OTHER_DEPLOYER = "U0DEPLOY1", "U0DEPLOY2"
APPROVER, OTHER_APPROVER = "U0APPROVER1", "U0APPROVER2"
BOTH = "U0BOTH"  # a deployer who is also an approver: never of their own request


def newest_request(slack: SlackFake, approvals: str, asked_by: str, words: str) -> dict[str, Any]:
    """The newest approval request in `approvals` asked by `asked_by` that mentions `words`."""

    def found(fake: SlackFake) -> dict[str, Any] | None:
        mine = [
            m
            for m in fake.channel_messages(approvals)
            if f"<@{asked_by}> asks" in text_of(m) and words in text_of(m)
        ]
        return mine[-1] if mine else None

    return slack.wait_for(found, timeout=60)


def refuse_then_approve(
    bot: BotProcess, request: dict[str, Any], *, approvals: str, channel: str
) -> None:
    """Press Approve on `request` (asked for by BOTH) as everyone who must be refused, then as
    an approver, a duplicate delivery of that press and a second approver, all at once.

    The refusals are answered privately and nothing runs in `channel` before the approval.
    """
    request_id = buttons(request)["approval_approve"]

    def press(user: str) -> None:
        sent = bot.press(
            "approval_approve",
            request_id,
            channel=approvals,
            message_ts=request["ts"],
            user_id=user,
        )
        assert sent.response.status_code == 200 and sent.seconds < SLACK_ACK_DEADLINE_S

    mark = responses_so_far(bot.slack)
    press(BOTH)  # the requester, though an approver
    wait_for_response(bot.slack, f"You asked for request #{request_id} yourself", since=mark)
    mark = responses_so_far(bot.slack)
    press(DEPLOYER)  # not an approver
    wait_for_response(bot.slack, "Only approvers (access.approvers in the config)", since=mark)
    assert bot.slack.channel_messages(channel) == []

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(press, [APPROVER, APPROVER, OTHER_APPROVER]))
