"""Environment locks from the chat: a request refused while someone holds one, and locks by
hand (`/deploy lock`, `/deploy unlock`, freeing someone else's after a confirmation, and the
holder's reminder, a durable timer).

A run's own lock is taken and freed by the run (run.py); only its end frees it — or, when its
run is dead (recovery.py `task_gone`), an approver's `/deploy unlock <env> --force`, after a
confirmation, announced in the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from bot.config import Environment
from bot.runbook.changes.activate import human_duration
from bot.slack import blocks
from bot.slack.changes import lock_blocks, recovery
from bot.slack.changes.change_blocks import day_and_time
from bot.slack.changes.run import answer
from bot.slack.chat import ChatError, Conversation
from bot.slack.services import Services
from bot.store import RUNNING, Deployment, EnvironmentLock, LockHeld

LOCK_REMINDER_TIMER = "deploy.lock_reminder"


async def refused_while_locked(
    services: Services, env: Environment, asked: str, conversation: Conversation
) -> str | None:
    """Before anything is read or asked: None when env is free, else the refusal (told)."""
    held = await asyncio.to_thread(services.store.environment_lock, env.name)
    if held is None:
        return None
    await answer(conversation, lock_blocks.locked(env.name, held, asked))
    return f"refused: {env.name} is locked by {held.holder}"


async def lock(
    services: Services, env: Environment, reason: str, user_id: str, conversation: Conversation
) -> str:
    taken = await asyncio.to_thread(
        services.store.acquire_manual_lock, env.name, user_id, reason, conversation.channel_id
    )
    if isinstance(taken, LockHeld):
        await answer(conversation, lock_blocks.locked(env.name, taken.lock, "lock"))
        return f"refused: {env.name} is locked by {taken.lock.holder}"
    why = f": {blocks.escape(reason)}" if reason else ""
    remind = human_duration(env.deploy.lock_reminder.total_seconds())
    await conversation.post(
        blocks.notice(
            f"<@{user_id}> locked {env.name} by hand{why}. No deploy or rollback runs there until "
            f"`/deploy unlock {env.name}`; the holder is reminded every {remind}.",
            ":lock:",
        )
    )
    await services.scheduler.schedule(
        LOCK_REMINDER_TIMER,
        env.name,
        taken.acquired_at + env.deploy.lock_reminder,
        {"token": taken.token},
    )
    return f"locked {env.name}"


async def unlock(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    held = await asyncio.to_thread(services.store.environment_lock, env.name)
    if held is None:
        await answer(conversation, blocks.notice(f"{env.name} is not locked."))
        return "not locked"
    if held.kind != "manual":
        await answer(
            conversation,
            blocks.notice(
                f"{env.name} is {lock_blocks.lock_holder(held)}. A running deploy keeps its lock "
                "until it ends: use the Cancel button on its message to stop it. (An approver "
                f"can free the lock of a run that died: `/deploy unlock {env.name} --force`.)",
                ":no_entry:",
            ),
        )
        return "refused: a deployment holds it"
    if held.holder != user_id:
        await answer(conversation, lock_blocks.unlock_confirm(env.name, held))
        return "asked to confirm"
    return await _free(services, env.name, held, user_id, conversation)


async def unlock_force(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    """/deploy unlock <env> --force (approvers): a run's lock, once its run is dead; asks to
    confirm first. A live run is refused: Cancel stops it."""
    held = await asyncio.to_thread(services.store.environment_lock, env.name)
    if held is None:
        await answer(conversation, blocks.notice(f"{env.name} is not locked."))
        return "not locked"
    if held.kind == "manual":
        await answer(
            conversation,
            blocks.notice(
                f"{env.name} is {lock_blocks.lock_holder(held)}: `/deploy unlock {env.name}` "
                "frees a lock taken by hand (--force is for a run that died)."
            ),
        )
        return "refused: held by hand"
    holding = await _holding_run(services, held)
    if isinstance(holding, str):
        await answer(conversation, blocks.notice(holding, ":no_entry:"))
        return f"refused: {holding}"
    await answer(conversation, lock_blocks.force_confirm(env.name, held, *holding))
    return "asked to confirm"


async def free_by_force(
    services: Services, value: str, user_id: str, conversation: Conversation
) -> str:
    """The confirmation of `--force`: the lock must be the one shown, its run still dead."""
    env_name, _, token = value.partition(":")
    held = await asyncio.to_thread(services.store.environment_lock, env_name)
    if held is None or held.token != token:
        await answer(
            conversation, blocks.notice(f"The lock on {env_name} changed since: look again.")
        )
        return "lock changed"
    holding = await _holding_run(services, held)
    if isinstance(holding, str):
        await answer(conversation, blocks.notice(holding, ":no_entry:"))
        return f"refused: {holding}"
    dead, why = holding
    ended = await recovery.end_dead_run(services, dead, freed_by=user_id)
    if ended is None:
        await answer(conversation, blocks.notice(f"The lock on {env_name} changed since."))
        return "lock changed"
    text = (
        f"<@{user_id}> freed {env_name} by force: {dead.kind} #{dead.id} (asked by "
        f"<@{dead.requested_by}>) had nothing running it any more ({why}). It is marked "
        "interrupted; its thread says what its hosts were left as."
    )
    await conversation.post(blocks.notice(text, ":unlock:"))
    return f"unlocked {env_name} by force: {dead.kind} #{dead.id} was dead ({why})"


async def _holding_run(services: Services, held: EnvironmentLock) -> tuple[Deployment, str] | str:
    """The dead run holding a lock and why it is dead; or, while it is alive, the refusal."""
    store = services.store
    deployment = (
        await asyncio.to_thread(store.deployment, held.deployment_id)
        if held.deployment_id is not None
        else None
    )
    if deployment is None or deployment.state != RUNNING:
        return f"The lock on {held.environment} changed since: look again."
    now = store.clock()
    if not recovery.task_gone(deployment, now):
        beat = int((now - deployment.heartbeat_at).total_seconds())
        return (
            f"{deployment.kind.capitalize()} #{deployment.id} on {held.environment} is alive "
            f"(its bot runs it; last heartbeat {beat} s ago), so its lock stays: use the "
            "Cancel button on its message to stop it."
        )
    beat = day_and_time(deployment.heartbeat_at)
    return deployment, f"its bot stopped or lost it; last heartbeat {beat}"


async def free_anyway(
    services: Services, value: str, user_id: str, conversation: Conversation
) -> str:
    """The confirmation button for freeing someone else's lock."""
    env_name, _, token = value.partition(":")
    held = await asyncio.to_thread(services.store.environment_lock, env_name)
    if held is None or held.token != token:
        await answer(
            conversation,
            blocks.notice(f"The lock on {env_name} changed since: look again."),
        )
        return "lock changed"
    return await _free(services, env_name, held, user_id, conversation)


async def _free(
    services: Services,
    env_name: str,
    held: EnvironmentLock,
    user_id: str,
    conversation: Conversation,
) -> str:
    if not await asyncio.to_thread(services.store.release_lock, env_name, held.token):
        await answer(conversation, blocks.notice(f"The lock on {env_name} changed since."))
        return "lock changed"
    await services.scheduler.cancel(LOCK_REMINDER_TIMER, env_name)
    if held.holder == user_id:
        text = f"<@{user_id}> freed {env_name}."
        await conversation.post(blocks.notice(text, ":unlock:"))
        return f"unlocked {env_name}"
    since = day_and_time(held.acquired_at)
    reason = f" ({blocks.escape(held.reason)})" if held.reason else ""
    text = f"<@{user_id}> freed {env_name}, which <@{held.holder}> held since {since}{reason}."
    await conversation.post(blocks.notice(text, ":unlock:"))
    with contextlib.suppress(ChatError):
        await services.chat.dm(held.holder, blocks.notice(text, ":unlock:"))
    return f"unlocked {env_name} held by {held.holder}"


async def remind_lock_holder(services: Services, env_name: str, token: str) -> None:
    held = await asyncio.to_thread(services.store.environment_lock, env_name)
    if held is None or held.token != token:
        return  # freed (or taken again by someone else) since the reminder was set
    env = services.config.environments.get(env_name)
    every = env.deploy.lock_reminder if env else timedelta(hours=1)
    since = day_and_time(held.acquired_at)
    reason = f" ({blocks.escape(held.reason)})" if held.reason else ""
    await services.chat.dm(
        held.holder,
        blocks.notice(
            f"You have held {env_name} since {since}{reason}. Nobody can deploy or roll back "
            f"there meanwhile: `/deploy unlock {env_name}` when you are done.",
            ":lock:",
        ),
    )
    await services.scheduler.schedule(
        LOCK_REMINDER_TIMER, env_name, services.store.clock() + every, {"token": token}
    )
