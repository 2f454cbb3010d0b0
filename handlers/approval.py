"""Approve / Reject on an approval request (production deploys and rollbacks)."""

from __future__ import annotations

from bot.slack.access import Allow
from bot.slack.changes import approval, approved, run
from bot.slack.changes.approval_blocks import APPROVE, REJECT, refused
from bot.slack.dispatch import Context, action, timer
from bot.slack.services import Services
from bot.store import Timer

DECIDE = Allow("approvers", then="never the requester; the request must still be open")


@action(APPROVE, "Approve", allow=DECIDE)
async def approve(ctx: Context) -> None:
    """Approve a request; the work starts exactly once, however often the button is pressed."""
    await _decide(ctx, "approved")


@action(REJECT, "Reject", allow=DECIDE)
async def reject(ctx: Context) -> None:
    """Reject a request."""
    await _decide(ctx, "rejected")


async def _decide(ctx: Context, state: str) -> None:
    value = ctx.request.text
    if not value.isdigit() or len(value) > 12:
        return await ctx.answer_usage("That button carries no approval request.")
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    pressed = ctx.request.message_ref

    async def work() -> str:
        decision = await approval.decide(services, int(value), user, state, pressed)
        if decision.refusal is not None:
            ctx.outcome = "denied"
            await run.answer(conversation, refused(decision.refusal))
            return decision.refusal
        decided = decision.approval
        assert decided is not None
        if state == "approved":
            return approved.start(services, decided)
        return f"request #{decided.id} {state}"

    ctx.hand_off(work)


@timer(approval.EXPIRE_TIMER)
async def expire(services: Services, due: Timer) -> None:
    await approval.expire(services, int(str(due.payload["approval"])))
