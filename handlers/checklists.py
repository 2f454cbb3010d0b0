"""The runbook's recovery checklists in an incident: the card's Runbook button, the chosen
procedure, a step's checkbox, and the buttons of the steps the bot can do — each exactly the
command it names, in the incident's environment, with that command's rule."""

from __future__ import annotations

from bot.config import Environment
from bot.runbook.health.log_search import LogQuery, Which
from bot.runbook.incidents.checklists import Does
from bot.slack.access import Allow
from bot.slack.blocks import echo, notice
from bot.slack.changes.rollback import listing, restore_newest_backup
from bot.slack.dispatch import Context, action
from bot.slack.health.health_report import report_health
from bot.slack.incidents import checklist_blocks, checklists
from bot.slack.incidents.incidents import PressReply
from handlers.health import diagnose, logs
from handlers.rollback import roll_back

RESPONDERS = Allow("responders")
STEP = checklist_blocks.STEP_ACTIONS


async def _answer(ctx: Context, reply: PressReply) -> str:
    if reply.answer is not None:
        await ctx.reply_privately(reply.answer)
    return reply.result


@action(checklist_blocks.RUNBOOK, "Runbook", allow=RESPONDERS)
async def runbook(ctx: Context) -> None:
    """The incident card's Runbook button: the recovery procedures to choose from."""
    await ctx.ack()
    incidents, value = ctx.services.incidents, ctx.request.text

    async def work() -> str:
        return await _answer(ctx, await checklists.offer(incidents, value))

    ctx.hand_off(work)


@action(checklist_blocks.POST, "A runbook procedure", allow=RESPONDERS)
async def post_checklist(ctx: Context) -> None:
    """A procedure chosen: its checklist goes in the incident's thread."""
    await ctx.ack()
    incidents, value, user = ctx.services.incidents, ctx.request.text, ctx.user_id

    async def work() -> str:
        return await _answer(ctx, await checklists.post(incidents, value, user))

    ctx.hand_off(work)


@action(checklist_blocks.TICK, "A checklist step's checkbox", allow=RESPONDERS)
async def tick(ctx: Context) -> None:
    """A step ticked or unticked: one timeline event with who and when, shown in place."""
    await ctx.ack()
    incidents, request, user = ctx.services.incidents, ctx.request, ctx.user_id
    block_id = getattr(request, "block_id", None)

    async def work() -> str:
        return await _answer(ctx, await checklists.tick(incidents, block_id, request.text, user))

    ctx.hand_off(work)


def _environment(ctx: Context) -> Environment | str:
    env = ctx.config.environments.get(ctx.request.text)
    if env is None:  # the config changed since the checklist was posted
        return f"{echo(ctx.request.text)} is no longer an environment in the config."
    return env


@action(
    STEP[Does.BACKUPS],
    "Run `/rollback list <env>`",
    allow=Allow("everyone", then="one SSH-opening command per environment at a time"),
)
async def backups(ctx: Context) -> None:
    """Check backup availability: `/rollback list <env>`."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    if not await ctx.hold_environment(env.name, f"/rollback list {env.name}"):
        return
    await ctx.ack()
    services, conversation = ctx.services, ctx.conversation
    ctx.hand_off(lambda: listing(services, env, conversation))


@action(
    STEP[Does.RESTORE],
    "Run `/rollback <env> <the newest backup>`",
    allow=Allow("deployers", then="requires_approval: an approver decides (never the requester)"),
)
async def restore(ctx: Context) -> None:
    """Restore from the most recent backup: `/rollback <env> <backup>`, the newest backup
    every host has (deployers; an approver where required)."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    if env.requires_approval:
        await ctx.ack(
            notice(
                f"{env.name} needs an approver: reading its hosts, then asking.",
                ":hourglass_flowing_sand:",
            )
        )
    else:
        await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    ctx.hand_off(lambda: restore_newest_backup(services, env, user, conversation), lane="long")


@action(
    STEP[Does.ROLL_BACK],
    "Run `/rollback <env>`",
    allow=Allow("deployers", then="requires_approval: an approver decides (never the requester)"),
)
async def rollback(ctx: Context) -> None:
    """Restore the previous version: exactly `/rollback <env>`."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await roll_back(ctx, env, None)


@action(STEP[Does.HEALTH], "Run `/health <env>`", allow=Allow("everyone"))
async def health(ctx: Context) -> None:
    """Verify system health: `/health <env>`, posted as a new message (the checklist stays)."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await ctx.ack()
    conversation, checker, user = ctx.conversation, ctx.services.health, ctx.user_id
    ctx.hand_off(
        lambda: report_health(conversation, checker, [env], scope=env.name, requested_by=user)
    )


@action(
    STEP[Does.DIAGNOSE],
    "Run `/health <env> diagnose`",
    allow=Allow("everyone", then="one SSH-opening command per environment at a time"),
)
async def diagnose_step(ctx: Context) -> None:
    """Check if the service is running: `/health <env> diagnose`."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await diagnose(ctx, env)


@action(
    STEP[Does.LOGS],
    "Run `/health <env> logs errors`",
    allow=Allow("everyone", then="one SSH-opening command per environment at a time"),
)
async def logs_step(ctx: Context) -> None:
    """Check logs: `/health <env> logs errors`."""
    env = _environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await logs(ctx, env, LogQuery(Which.ERRORS))
