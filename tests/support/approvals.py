"""Walking a production approval request the way /deploy and /rollback tests both need it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.conversation import Message, Reply, text_of

# The people and the approvals channel in the deploy and rollback tests' configs.
DEPLOYER, OTHER_DEPLOYER = "U0DEPLOY1", "U0DEPLOY2"
APPROVER, OTHER_APPROVER = "U0APPROVER1", "U0APPROVER2"
BOTH = "U0BOTH"  # a deployer who is also an approver: never of their own request
APPROVALS = "C0APPROVALS"


def request_for(asked: Reply, words: str) -> Message:
    """The approval request `asked` led to: in APPROVALS, asked by its sender, with words."""

    def request(message: dict[str, Any]) -> bool:
        text = text_of(message)
        return f"<@{asked.user}> asks" in text and words in text

    return asked.message(request, in_=APPROVALS)


def refuse_then_approve(request: Message, asked: Reply) -> list[Reply]:
    """Press Approve on `request` (which `asked`, by BOTH, led to) as everyone who must be
    refused, then as an approver, a duplicate delivery of that press and a second approver,
    all at once; returns those three presses.

    The refusals are answered privately and nothing runs in `asked`'s channel before the
    approval.
    """
    request_id = request.buttons["approval_approve"]
    request.press("Approve", as_=BOTH).private(f"You asked for request #{request_id} yourself")
    request.press("Approve", as_=DEPLOYER).private("Only approvers may press Approve.")
    assert asked.posted() == []

    approve = request.button("Approve")  # as all three see it, before any press lands
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(approve.press, [APPROVER, APPROVER, OTHER_APPROVER]))
