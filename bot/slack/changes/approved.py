"""What an approved request starts: one registry from a kind to its starter, and the one place
that rebuilds the requester's conversation (their channel, their private replies) from the
request, so the run answers them as if they had just typed the command.

Only the press that decided the request calls `start` (approval.py), so the work starts exactly
once however often the button is pressed or delivered. A request approved just before the bot
died (decided, never started) is started by `sweep_changes` at the next start-up (and every
half minute, by any replica): the run records the request's run key in the transaction that
records the run (bot/store begin_deployment), so a second start finds it taken and does
nothing. One found only after its environment's approval_timeout is not started: the
requester is told to ask again. The sweep also removes build workspaces a killed bot left
(their processes killed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot.config import Environment
from bot.runbook.changes.workspace import sweep_orphans
from bot.slack import blocks
from bot.slack.changes import deploy, restart, rollback
from bot.slack.changes.approval import NotStartable, discard_pinned
from bot.slack.changes.run import answer
from bot.slack.chat import Conversation
from bot.slack.services import Services
from bot.store import Approval, StoreError

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
        try:
            await _run(services, starter, approval)
        finally:
            _starting.discard(approval.id)

    _starting.add(approval.id)
    services.workers.submit(f"{approval.kind} #{approval.id}", job, lane="long")
    return f"request #{approval.id} approved"


# Approved requests this process has handed to its workers and not finished starting: the
# sweep leaves them to that start.
_starting: set[int] = set()
# A request decided this recently may be on its way to a start in another replica.
SETTLE = timedelta(seconds=10)


async def sweep_changes(services: Services) -> None:
    """Orphaned build workspaces removed; approved requests never started, started."""
    try:
        await sweep_orphans(services.workspaces)
    except OSError as exc:
        log.error("build workspaces not swept (%s): check %s", exc, services.workspaces)
    try:
        waiting = await asyncio.to_thread(services.store.approvals_not_started)
    except StoreError as exc:
        log.error("approved requests not looked for: %s", exc)
        return
    now = services.store.clock()
    for approval in waiting:
        decided = approval.decided_at or approval.created_at
        if approval.id in _starting or now - decided < SETTLE:
            continue
        env = services.config.environments.get(approval.environment)
        timeout = env.deploy.approval_timeout if env is not None else timedelta(0)
        if now - decided > timeout:
            await _too_late(services, approval)
            continue
        log.warning(
            "approval #%d: approved at %s but never started (the bot stopped); starting it",
            approval.id,
            decided.isoformat(),
        )
        start(services, approval)


async def _too_late(services: Services, approval: Approval) -> None:
    try:
        if not await asyncio.to_thread(services.store.mark_approval_started, approval.id):
            return
    except StoreError as exc:
        log.error("approval #%d: not marked handled: %s", approval.id, exc)
        return
    text = (
        f"The {approval.kind} approved in request #{approval.id} was not started: the bot was "
        "down from the approval until after the request's time ran out. Ask again."
    )
    log.error("approval #%d: %s", approval.id, text)
    await discard_pinned(services, approval)
    await answer(requester_conversation(services, approval), blocks.notice(text, ":x:"))


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
    try:  # handled: a later sweep does not try it again
        await asyncio.to_thread(services.store.mark_approval_started, approval.id)
    except StoreError as exc:
        log.error("approval #%d: not marked handled: %s", approval.id, exc)
    text = f"The {approval.kind} approved in request #{approval.id} did not start: {problem}."
    await answer(conversation, blocks.notice(text, ":x:"))
    return f"approval #{approval.id}: {problem}"
