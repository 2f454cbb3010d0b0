"""/deploy: the runbook's deployment, its locks, status and history; the deploy's buttons; and
the timers of every change (the checks after a deploy or a rollback, the lock reminder)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.config import Config, Environment
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest
from bot.runbook.changes.releases import is_version
from bot.slack import blocks
from bot.slack.access import Allow, Usage
from bot.slack.blocks import echo
from bot.slack.changes import aftercare, locks, run, status
from bot.slack.changes.aftercare_blocks import ROLL_BACK
from bot.slack.changes.change_blocks import CANCEL
from bot.slack.changes.deploy import ask_approval
from bot.slack.changes.deploy import start as start_deploy
from bot.slack.changes.lock_blocks import UNLOCK_CONFIRM, UNLOCK_FORCE
from bot.slack.changes.rollback import undo_deploy
from bot.slack.dispatch import Context, action, command, timer
from bot.slack.services import Services
from bot.store import StoreError, Timer

MAX_TEXT = 300  # longer than any valid /deploy text (a lock reason included)
MAX_REASON = 200
FLAGS = {"--dry-run": "dry_run", "--skip-tests": "skip_tests", "--no-backup": "no_backup"}
DEPLOY_USAGE = "/deploy <env> [<version>] [--dry-run] [--skip-tests] [--no-backup]"


def environment(word: str, config: Config) -> Environment | str:
    env = config.environments.get(word.lower())
    if env is None:
        return f"Unknown environment {echo(word)}. Known: {', '.join(config.environments)}."
    return env


@dataclass(frozen=True)
class Parsed:
    env: Environment
    version: str | None
    options: DeployOptions


def parse_deploy(words: list[str], config: Config) -> Parsed | str:
    """`<env> [<version>] [flags]` or what is wrong with it."""
    env = environment(words[0], config)
    if isinstance(env, str):
        return env
    version: str | None = None
    options: dict[str, bool] = {}
    for word in words[1:]:
        if word.startswith("-"):
            flag = FLAGS.get(word.lower())
            if flag is None:
                return f"Unknown option {echo(word)}. Options: {', '.join(FLAGS)}."
            options[flag] = True
        elif version is not None:
            return f"One version at most: {echo(version)} and then {echo(word)}."
        elif not is_version(word):
            return (
                f"{echo(word)} is not a version: 1 to 64 of letters, digits and . _ - "
                "(like 1.4.2 or v2.0.0-rc1)."
            )
        else:
            version = word
    return Parsed(env, version, DeployOptions(**options))


@command(
    "/deploy",
    Usage(
        DEPLOY_USAGE,
        "build, test, back up, install and restart one host at a time, verified; "
        "production waits for an approver",
        role="deployers",
        then="requires_approval: an approver decides (never the requester)",
    ),
    Usage("/deploy status [<env>]", "what runs now, the locks, the last CI runs"),
    Usage("/deploy history <env>", "the last 10 deployments: who, version, result, approver"),
    Usage(
        "/deploy lock <env> [reason]", "hold an environment by hand (a freeze)", role="deployers"
    ),
    Usage(
        "/deploy unlock <env>",
        "free an environment held by hand",
        role="deployers",
        then="someone else's lock: asks to confirm, and is announced; a running deploy's: no",
    ),
    Usage(
        "/deploy unlock <env> --force",
        "free the lock of a deploy or rollback whose run died",
        role="approvers",
        then="only when nothing runs it any more; asks to confirm, and is announced",
    ),
    Usage("/deploy help", "show this help"),
)
async def deploy(ctx: Context) -> None:
    """Deploy EventMesh by the runbook: build, test, back up, install, restart, verify."""
    text = ctx.request.text
    if len(text) > MAX_TEXT:
        return await ctx.answer_usage(f"That is {len(text):,} characters; too long for /deploy.")
    words = text.split()
    if not words:
        return await ctx.answer_usage("Which environment?")
    sub = words[0].lower()
    if words == ["help"] or sub == "help":
        return await ctx.answer_help()
    if sub == "status":
        return await _status(ctx, words[1:])
    if sub == "history":
        return await _history(ctx, words[1:])
    if sub in ("lock", "unlock"):
        return await _lock(ctx, sub, words[1:], text)
    parsed = parse_deploy(words, ctx.config)
    if isinstance(parsed, str):
        return await ctx.answer_usage(parsed)
    request = DeployRequest(parsed.env, parsed.version, parsed.options, ctx.user_id)
    conversation = ctx.conversation
    services = ctx.services
    if parsed.env.requires_approval and not parsed.options.dry_run:
        await ctx.ack(
            blocks.notice(
                f"{parsed.env.name} needs an approver: checking CI and the hosts, then asking.",
                ":hourglass_flowing_sand:",
            )
        )
        ctx.hand_off(lambda: ask_approval(services, request, conversation), lane="long")
        return
    await ctx.ack()
    ctx.hand_off(lambda: start_deploy(services, request, conversation), lane="long")


async def _status(ctx: Context, rest: list[str]) -> None:
    if len(rest) > 1:
        return await ctx.answer_usage("/deploy status takes one environment at most.")
    env_name: str | None = None
    if rest:
        env = environment(rest[0], ctx.config)
        if isinstance(env, str):
            return await ctx.answer_usage(env)
        env_name = env.name
    await ctx.ack()
    services, conversation = ctx.services, ctx.conversation
    ctx.hand_off(lambda: status.status(services, env_name, conversation))


async def _history(ctx: Context, rest: list[str]) -> None:
    if len(rest) != 1:
        return await ctx.answer_usage("/deploy history takes one environment.")
    env = environment(rest[0], ctx.config)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await ctx.ack()
    services, conversation = ctx.services, ctx.conversation
    ctx.hand_off(lambda: status.history(services, env.name, conversation))


async def _lock(ctx: Context, sub: str, rest: list[str], text: str) -> None:
    if not rest:
        return await ctx.answer_usage(f"/deploy {sub} needs an environment.")
    env = environment(rest[0], ctx.config)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    force = sub == "unlock" and rest[1:] == ["--force"]
    if sub == "unlock" and len(rest) > 1 and not force:
        return await ctx.answer_usage("/deploy unlock takes the environment, then --force at most.")
    # The reason as typed (spacing kept), after the subcommand and the environment.
    reason = text.split(None, 2)[2].strip() if len(rest) > 1 and sub == "lock" else ""
    if len(reason) > MAX_REASON:
        return await ctx.answer_usage(f"Keep the reason under {MAX_REASON} characters.")
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    if sub == "lock":
        ctx.hand_off(lambda: locks.lock(services, env, reason, user, conversation))
    elif force:
        ctx.hand_off(lambda: locks.unlock_force(services, env, user, conversation))
    else:
        ctx.hand_off(lambda: locks.unlock(services, env, user, conversation))


def _record_id(ctx: Context) -> int | None:
    return _deployment_id(ctx.request.text)


def _deployment_id(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 12 else None


async def _asked_for_it(services: Services, value: str, user_id: str) -> bool:
    """Whether user_id asked for the deployment a button carries."""
    deployment_id = _deployment_id(value)
    if deployment_id is None:
        return False
    try:
        deployment = await asyncio.to_thread(services.store.deployment, deployment_id)
    except StoreError:
        return False
    return deployment is not None and deployment.requested_by == user_id


@action(
    CANCEL,
    "Cancel",
    allow=Allow("approvers", also="whoever asked for it", owner=_asked_for_it),
)
async def cancel(ctx: Context) -> None:
    """The progress message's Cancel button: stop before the next step."""
    deployment_id = _record_id(ctx)
    if deployment_id is None:
        return await ctx.answer_usage("That button carries no deployment.")
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id

    async def work() -> str:
        answer = await run.cancel(services, deployment_id, user)
        await run.answer(conversation, blocks.notice(answer))
        return answer

    ctx.hand_off(work)


@action(ROLL_BACK, "Roll back", allow=Allow("deployers"))
async def roll_back(ctx: Context) -> None:
    """The Roll back button of a deploy's aftercare: undo that deploy (a /rollback planned from
    it)."""
    deployment_id = _record_id(ctx)
    if deployment_id is None:
        return await ctx.answer_usage("That button carries no deployment.")
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    ctx.hand_off(lambda: undo_deploy(services, deployment_id, user, conversation), lane="long")


@action(
    UNLOCK_CONFIRM,
    "Free it",
    allow=Allow("deployers", then="the lock must be the one shown (not changed since)"),
)
async def unlock_confirm(ctx: Context) -> None:
    """Free someone else's lock, after being asked to confirm."""
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    value = ctx.request.text
    ctx.hand_off(lambda: locks.free_anyway(services, value, user, conversation))


@action(
    UNLOCK_FORCE,
    "Free it",
    allow=Allow(
        "approvers",
        then="the lock must be the one shown, and still held by a run nothing runs any more",
    ),
)
async def unlock_force(ctx: Context) -> None:
    """Free the lock of a run that died, after being asked to confirm."""
    await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    value = ctx.request.text
    ctx.hand_off(lambda: locks.free_by_force(services, value, user, conversation))


@timer(aftercare.AFTERCARE_TIMER)
async def aftercare_check(services: Services, due: Timer) -> None:
    """One check after a deploy or a rollback."""
    await aftercare.check(services, due)


@timer(locks.LOCK_REMINDER_TIMER)
async def remind(services: Services, due: Timer) -> None:
    await locks.remind_lock_holder(services, due.key, str(due.payload.get("token", "")))
