"""Changes that wait for an approver: production deploys and rollbacks, asked and decided the
same way.

An approval is a row in the store (kind 'deploy' or 'rollback', what in its payload) and a
message in `slack.approvals_channel` with Approve / Reject buttons (action ids
`approval_approve` / `approval_reject`, the request id as value). The decision is a
conditional UPDATE … WHERE state = 'pending', so a double press, a duplicated delivery or a
press racing the expiry decides exactly once; only that one caller starts the work
(approved.py: what an approved kind starts).

Payload keys every kind uses (the request message is drawn from them):
  version, flags, hosts, checklist (ChecklistItem dicts), plan (step titles),
  channel (where the requester asked), response_url (their ephemeral replies).
A kind adds whatever its starter needs (a deploy: `options` and `package`, the package built
for the approver; a rollback: `target`, the line naming what it goes back to, and `plan`, the
pinned RollbackPlan). Files a request pins (`pinned_dir`, under `<data_dir>/approved/`) are
removed when it ends without running (rejected, expired) and by the starter after its run.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bot.config import Environment
from bot.runbook.changes.activate import human_duration
from bot.runbook.changes.checklist import ChecklistItem
from bot.runbook.changes.deploy_request import PinnedPackage
from bot.slack import blocks
from bot.slack.changes import approval_blocks
from bot.slack.changes.change_blocks import when
from bot.slack.changes.run import answer
from bot.slack.chat import ChatError, Conversation, Message, MessageRef
from bot.slack.services import Services
from bot.store import Approval

log = logging.getLogger(__name__)

EXPIRE_TIMER = "approval.expire"
PINNED_DIR = "pinned_dir"  # payload key: files the request pins (the package built for it)


def timeout_text(timeout: timedelta) -> str:
    return human_duration(timeout.total_seconds())


def _texts(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def render(approval: Approval) -> Message:
    payload = approval.payload
    checklist = payload.get("checklist")
    return approval_blocks.request(
        approval,
        version=str(payload.get("version") or ""),
        flags=_texts(payload.get("flags")),
        hosts=_texts(payload.get("hosts")),
        checklist=[ChecklistItem.from_dict(i) for i in checklist]
        if isinstance(checklist, list)
        else [],
        plan=_texts(payload.get("plan")),
        timeout_text=str(payload.get("timeout_text", "")),
        target=str(payload.get("target") or ""),
        package=PinnedPackage.from_dict(payload.get("package")),
    )


class NotStartable(Exception):
    """An approved request whose payload cannot be started (its pinned plan does not read
    back); the message says why, to the requester."""


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver is asked to approve; the request message is drawn from it."""

    kind: str  # deploy | rollback: what approved.py starts
    environment: Environment
    requested_by: str
    version: str
    flags: Sequence[str]
    hosts: Sequence[str]
    checklist: Sequence[ChecklistItem]
    plan: Sequence[str]  # the titles of the steps that will run
    what: str  # for the audit line: 'v1.4.2', 'a rollback to release …'
    extra: Mapping[str, object] = field(default_factory=dict)  # what the kind's starter needs


async def ask(services: Services, request: ApprovalRequest, conversation: Conversation) -> str:
    """Ask for approval and tell the requester where (or why it could not be asked)."""
    asked, problem = await _post_request(services, request, conversation)
    if asked is None:
        await answer(conversation, blocks.notice(problem, ":x:"))
        return f"not asked: {problem}"
    timeout = timeout_text(request.environment.deploy.approval_timeout)
    await answer(conversation, approval_blocks.asked(asked, asked.channel, timeout))
    return f"approval #{asked.id} requested for {request.what}"


async def _post_request(
    services: Services, request: ApprovalRequest, conversation: Conversation
) -> tuple[Approval | None, str]:
    """Record a request, post it for the approvers, and set its expiry timer."""
    store, chat = services.store, services.chat
    timeout = request.environment.deploy.approval_timeout
    payload: dict[str, object] = {
        "version": request.version,
        "flags": list(request.flags),
        "hosts": list(request.hosts),
        "checklist": [item.as_dict() for item in request.checklist],
        "plan": list(request.plan),
        "channel": conversation.channel_id,
        "response_url": conversation.response_url,
        "timeout_text": timeout_text(timeout),
        **request.extra,
    }
    approval = await asyncio.to_thread(
        store.create_approval,
        kind=request.kind,
        environment=request.environment.name,
        requested_by=request.requested_by,
        payload=payload,
        expires_at=store.clock() + timeout,
    )
    where = services.config.slack.approvals_channel or conversation.channel_id
    try:
        ref = await chat.post(where, render(approval))
    except ChatError as exc:
        await asyncio.to_thread(store.decide_approval, approval.id, "expired", None)
        return None, (
            f"could not post the approval request in <#{where}>: Slack said {exc.error} "
            "(invite the bot to the approvals channel). Nothing was started."
        )
    await asyncio.to_thread(store.set_approval_message, approval.id, ref.channel, ref.ts)
    await services.scheduler.schedule(
        EXPIRE_TIMER, str(approval.id), approval.expires_at, {"approval": approval.id}
    )
    current = await asyncio.to_thread(store.approval, approval.id)
    assert current is not None
    if current.state != "pending":
        # Decided in the moment between posting and recording where the request is: the
        # decider could not update the message, so it is done here.
        await show_decision(services, current, tell_requester=False)
    return current, ""


@dataclass(frozen=True)
class Decision:
    """What a press came to: `won` only for the one press that decided the request."""

    won: bool
    approval: Approval | None
    refusal: str | None = None


async def decide(
    services: Services,
    approval_id: int,
    user_id: str,
    state: str,
    pressed: MessageRef | None = None,
) -> Decision:
    """An approver's press. The requester and anyone not in access.approvers are refused.

    `pressed` is the message the button was on: the request, whose place in the store may not
    be recorded yet when the press comes a moment after the post.
    """
    store = services.store
    approval = await asyncio.to_thread(store.approval, approval_id)
    if approval is None:
        return Decision(False, None, f"There is no approval request #{approval_id}.")
    if not services.config.access.may_approve(user_id):
        return Decision(
            False, approval, "Only approvers (access.approvers in the config) may decide this."
        )
    if approval.requested_by == user_id:
        return Decision(
            False,
            approval,
            f"You asked for request #{approval_id} yourself: another approver must decide it.",
        )
    won = await asyncio.to_thread(store.decide_approval, approval_id, state, user_id)
    approval = await asyncio.to_thread(store.approval, approval_id)
    assert approval is not None
    if not won:
        if approval.state == "pending":  # pressed after its time, before the expiry timer ran
            await expire(services, approval_id)
            approval = await asyncio.to_thread(store.approval, approval_id)
            assert approval is not None
        by = f" by <@{approval.decided_by}>" if approval.decided_by else ""
        at = f" at {when(approval.decided_at)}" if approval.decided_at else ""
        return Decision(
            False, approval, f"Request #{approval_id} is already {approval.state}{by}{at}."
        )
    await services.scheduler.cancel(EXPIRE_TIMER, str(approval_id))
    await show_decision(services, approval, fallback=pressed)
    if approval.state != "approved":
        await discard_pinned(services, approval)
    return Decision(True, approval)


async def discard_pinned(services: Services, approval: Approval) -> None:
    """Remove the files the request pinned (only ever under the approved packages' folder)."""
    pinned = approval.payload.get(PINNED_DIR)
    if not isinstance(pinned, str) or not pinned:
        return
    path, root = Path(pinned).resolve(), services.approved_packages.resolve()
    if root not in path.parents:
        log.error("approval #%d: pinned files %s are not under %s; left", approval.id, path, root)
        return
    await asyncio.to_thread(shutil.rmtree, path, True)


async def expire(services: Services, approval_id: int) -> bool:
    """Close a request nobody decided in time; True if this call did it."""
    store = services.store
    if not await asyncio.to_thread(store.decide_approval, approval_id, "expired", None):
        return False
    approval = await asyncio.to_thread(store.approval, approval_id)
    if approval is not None:
        await show_decision(services, approval)
        await discard_pinned(services, approval)
    return True


async def show_decision(
    services: Services,
    approval: Approval,
    *,
    fallback: MessageRef | None = None,
    tell_requester: bool = True,
) -> None:
    """Update the request in place and tell the requester. Slack failing is logged, not fatal."""
    chat = services.chat
    ref = (
        MessageRef(approval.channel, approval.message_ts)
        if approval.channel and approval.message_ts
        else fallback
    )
    if ref is not None:
        try:
            await chat.update(ref, render(approval))
        except ChatError as exc:
            log.warning("approval #%d: request message not updated: %s", approval.id, exc.error)
    if not tell_requester:
        return
    what = f"{approval.kind} of {approval.environment}"
    try:
        await chat.dm(approval.requested_by, approval_blocks.told(approval, what))
    except ChatError as exc:
        log.warning("approval #%d: requester not told: %s", approval.id, exc.error)
