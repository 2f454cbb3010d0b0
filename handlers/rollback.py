"""/rollback: the runbook's rollback (a kept release or a backup), what it can go back to, and
manual backups."""

from __future__ import annotations

from bot.config import Environment
from bot.runbook.changes.rollback_plan import Named, parse_target
from bot.slack import blocks
from bot.slack.access import Usage
from bot.slack.blocks import echo
from bot.slack.changes.rollback import backup, listing, rollback_to
from bot.slack.dispatch import Context, command
from handlers.deploy import environment

MAX_TEXT = 200  # longer than any valid /rollback text: an environment and a backup name


@command(
    "/rollback",
    Usage(
        "/rollback <env> [<id>]",
        "back to the previous good release (or the newest backup every host has), or to "
        "exactly the release or backup named; checked, watched afterwards; production waits "
        "for an approver",
        role="deployers",
        then="requires_approval: an approver decides (never the requester)",
    ),
    Usage(
        "/rollback list <env>",
        "the releases and backups to go back to, newest first",
        then="one SSH-opening command per environment at a time",
    ),
    Usage(
        "/rollback backup <env>",
        "back up what runs now (the runbook's Manual Backups)",
        role="deployers",
    ),
    Usage("/rollback help", "show this help"),
)
async def rollback(ctx: Context) -> None:
    """Roll back by the runbook: stop, restore, start, health checks, follow-up checks."""
    text = ctx.request.text
    if len(text) > MAX_TEXT:
        return await ctx.answer_usage(f"That is {len(text):,} characters; too long for /rollback.")
    words = text.split()
    if not words:
        return await ctx.answer_usage("Which environment?")
    sub = words[0].lower()
    if sub == "help":
        return await ctx.answer_help()
    if sub in ("list", "backup"):
        if len(words) != 2:
            return await ctx.answer_usage(f"/rollback {sub} takes one environment.")
        env = environment(words[1], ctx.config)
        if isinstance(env, str):
            return await ctx.answer_usage(env)
        services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
        if sub == "list":
            if not await ctx.hold_environment(env.name, f"/rollback list {env.name}"):
                return
            await ctx.ack()
            ctx.hand_off(lambda: listing(services, env, conversation))
            return
        await ctx.ack()
        ctx.hand_off(lambda: backup(services, env, user, conversation), lane="long")
        return
    env = environment(words[0], ctx.config)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    if len(words) > 2:
        return await ctx.answer_usage("One id at most: `/rollback list` shows them.")
    choice = None
    if len(words) == 2:
        choice = parse_target(words[1], env.name)
        if choice is None:
            return await ctx.answer_usage(
                f"{echo(words[1])} is not a release id (like 20261127T120000Z-1.4.2) or a "
                f"backup of {env.name} (eventmesh-backup-{env.name}-20261127T115959Z.tar.gz, "
                f"or just 20261127T115959Z). `/rollback list {env.name}` shows them."
            )
    await roll_back(ctx, env, choice)


async def roll_back(ctx: Context, env: Environment, choice: Named | None) -> None:
    """`/rollback <env> [<id>]` once parsed, and every button that means the same (a
    diagnosis's Roll back): deployers only (their declared rule), production through an
    approver."""
    if env.requires_approval:
        await ctx.ack(
            blocks.notice(
                f"{env.name} needs an approver: reading its hosts, then asking.",
                ":hourglass_flowing_sand:",
            )
        )
    else:
        await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    ctx.hand_off(lambda: rollback_to(services, env, choice, user, conversation), lane="long")
