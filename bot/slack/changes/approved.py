"""What an approved request starts: one registry from a kind to its starter, and the one place
that rebuilds the requester's conversation (their channel, their private replies) from the
request, so the run answers them as if they had just typed the command.

Only the press that decided the request calls `start` (approval.py), so the work starts exactly
once however often the button is pressed or delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.config import Environment
from bot.slack import blocks
from bot.slack.changes import deploy, restart, rollback
from bot.slack.changes.approval import NotStartable
from bot.slack.changes.run import answer
from bot.slack.chat import Conversation
from bot.slack.services import Services
from bot.store import Approval

log = logging.getLogger(__name__)


# A kind's starter: the approved request, its environment, and the requester's conversation;
# the audit line. It raises NotStartable for a payload it cannot read.
Starter = Callable[[Services, Approval, Environment, Conversation], Awaitable[str]]

STARTERS: dict[str, Starter] = {
    "deploy": deploy.start_approved,
    "rollback": rollback.start_approved,
    "restart": restart.start_approved,
}


def start(services: Services, approval: Approval) -> str:
    """Hand the approved change to the workers' long lane; the audit line of the press."""
    starter = STARTERS.get(approval.kind)
    if starter is None:
        return f"approval #{approval.id} approved; nothing here starts a {approval.kind}"

    async def job() -> None:
        await _run(services, starter, approval)

    services.workers.submit(f"{approval.kind} #{approval.id}", job, lane="long")
    return f"request #{approval.id} approved"


def requester_conversation(services: Services, approval: Approval) -> Conversation:
    """Where the requester asked, and their private replies while Slack keeps them."""
    payload = approval.payload
    response_url = payload.get("response_url")
    return Conversation(
        services.chat,
        str(payload.get("channel") or approval.channel or ""),
        approval.requested_by,
        response_url if isinstance(response_url, str) else None,
    )


async def _run(services: Services, starter: Starter, approval: Approval) -> str:
    conversation = requester_conversation(services, approval)
    env = services.config.environments.get(approval.environment)
    if env is None:
        problem = f"{approval.environment} is no longer in the config"
    else:
        try:
            return await starter(services, approval, env, conversation)
        except NotStartable as exc:
            log.error("approval #%d: not started: %s", approval.id, exc)
            problem = str(exc)
    text = f"The {approval.kind} approved in request #{approval.id} did not start: {problem}."
    await answer(conversation, blocks.notice(text, ":x:"))
    return f"approval #{approval.id}: {problem}"
