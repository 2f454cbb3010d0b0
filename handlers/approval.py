"""Approve / Reject on an approval request (production deploys; rollbacks use them too)."""

from __future__ import annotations

from bot.slack.changes import approvals, deploy_blocks, deployments, rollbacks
from bot.slack.dispatch import Context, action, timer
from bot.slack.services import Services
from bot.store import Approval, Timer

# What an approved request of each kind starts.
STARTERS: dict[str, approvals.Starter] = {
    "deploy": deployments.start_approved,
    "rollback": rollbacks.start_approved,
}


@action(deploy_blocks.APPROVE)
async def approve(ctx: Context) -> None:
    """Approve a request; the work starts exactly once, however often the button is pressed."""
    await _decide(ctx, "approved")


@action(deploy_blocks.REJECT)
async def reject(ctx: Context) -> None:
    """Reject a request."""
    await _decide(ctx, "rejected")


async def _decide(ctx: Context, state: str) -> None:
    value = ctx.request.text
    if not value.isdigit() or len(value) > 12:
        return await ctx.answer_usage("That button carries no approval request.")
    if not ctx.may("approvers"):
        return await ctx.deny("Only approvers (access.approvers in the config) may decide this.")
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    pressed = ctx.request.message_ref

    async def work() -> str:
        decision = await approvals.decide(services, int(value), user, state, pressed)
        if decision.refusal is not None:
            ctx.outcome = "denied"
            await deployments.tell(conversation, deploy_blocks.approval_refused(decision.refusal))
            return decision.refusal
        approval = decision.approval
        assert approval is not None
        if state == "approved":
            starter = STARTERS.get(approval.kind)
            if starter is None:
                return f"approval #{approval.id} approved; nothing here starts a {approval.kind}"
            services.workers.submit(
                f"{approval.kind} #{approval.id}",
                lambda: _start(services, starter, approval),
                lane="long",
            )
        return f"request #{approval.id} {state}"

    ctx.hand_off(work)


async def _start(services: Services, starter: approvals.Starter, approval: Approval) -> None:
    await starter(services, approval)


@timer(approvals.EXPIRE_TIMER)
async def expire(services: Services, due: Timer) -> None:
    await approvals.expire(services, int(due.payload["approval"]))  # type: ignore[call-overload]
