"""Changes whose task is gone: a run left 'running' with nothing running it — its bot died (its
process not alive, or its heartbeat stale), or this very process lost it (the run ended and the
store did not take its end; bot/slack/changes/run.py `running_here`) — is ended, its message
and thread say so, and its lock is freed — at start-up and every half minute after, by any
running replica; and by an approver's `/deploy unlock <env> --force` (locks.py) without
waiting. A rollback cut short also pages. A lock taken by hand stays.

An interrupted run may have left its hosts part-way: host_repair.py inspects them and repairs
what it can (the thread says what it found and did; an incident names what it could not).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from bot.process import THIS_PROCESS, process_alive
from bot.runbook.changes.progress import Finished, Outcome
from bot.slack import blocks
from bot.slack.changes import run
from bot.slack.changes.change_blocks import ChangeView
from bot.slack.changes.run import interrupted_summary, post_in_thread, tell_interrupted, where_shown
from bot.slack.chat import ChatError
from bot.slack.services import Services
from bot.store import RUNNING, Deployment, StoreError

log = logging.getLogger(__name__)

# A running change whose heartbeat is older than this belongs to a bot that is gone.
STALE_AFTER = timedelta(seconds=90)
RECOVERY_EVERY = timedelta(seconds=30)


def task_gone(deployment: Deployment, now: datetime) -> bool:
    """Whether nothing runs this change any more: this process does not (it is not among its
    runs), or its owner's process is dead, or (on another machine) its heartbeat is stale."""
    if deployment.owner == THIS_PROCESS:
        return not run.running_here(deployment.id)
    alive = process_alive(deployment.owner)
    if alive is None:
        return now - deployment.heartbeat_at >= STALE_AFTER
    return not alive


async def recover_interrupted(services: Services) -> int:
    """Changes whose task is gone: end them, say so in their thread, free their lock."""
    store = services.store
    try:
        running = await asyncio.to_thread(store.deployments, state=RUNNING, limit=500)
    except StoreError as exc:
        log.error("interrupted deployments not looked for: %s", exc)
        return 0
    now = store.clock()
    recovered = 0
    for deployment in running:
        if task_gone(deployment, now) and await end_dead_run(services, deployment) is not None:
            recovered += 1
    return recovered


async def end_dead_run(
    services: Services, deployment: Deployment, freed_by: str | None = None
) -> Deployment | None:
    """End a run whose task is gone and free its lock; None when another got there first (or
    the store failed, logged). `freed_by`: the approver who freed it by hand."""
    ended_here = run.unrecorded_end(deployment.id) if deployment.owner == THIS_PROCESS else None
    if ended_here is not None:
        return await _record_late_end(services, deployment, ended_here)
    summary = interrupted_summary(deployment)
    if freed_by is not None:
        summary += f" (<@{freed_by}> freed the lock by hand.)"
    store = services.store
    try:
        ended = await asyncio.to_thread(store.interrupt_deployment, deployment.id, summary)
        if ended is None:
            return None  # another replica got there first
        steps = await asyncio.to_thread(store.deployment_steps, deployment.id)
    except StoreError as exc:
        log.error("deployment #%d not marked interrupted: %s", deployment.id, exc)
        return None
    log.warning(
        "%s #%d of %s was interrupted (its bot %s stopped, or its task ended); lock released",
        ended.kind,
        ended.id,
        ended.environment,
        ended.owner,
    )
    ref = where_shown(ended)
    if ref is not None:
        view = ChangeView.of_record(ended)
        view.apply_recorded(steps)
        view.apply(Finished(Outcome("interrupted", summary, ended.version)))
        try:
            await services.chat.update(ref, view.message())
        except ChatError as exc:
            log.warning("deployment #%d message not updated: %s", ended.id, exc.error)
    await tell_interrupted(services, ended, ref)
    return ended


async def _record_late_end(
    services: Services, deployment: Deployment, outcome: Outcome
) -> Deployment | None:
    """A run of this process that ended while the store was away: record how it ended now."""
    store = services.store
    try:
        if not await asyncio.to_thread(
            store.finish_deployment, deployment.id, outcome.state, outcome.summary
        ):
            return None
        ended = await asyncio.to_thread(store.deployment, deployment.id)
    except StoreError as exc:
        run.keep_unrecorded_end(deployment.id, outcome)  # next sweep, then
        log.error("deployment #%d: its end is still not recorded: %s", deployment.id, exc)
        return None
    log.warning(
        "%s #%d of %s: its end (%s) recorded late; lock released",
        deployment.kind,
        deployment.id,
        deployment.environment,
        outcome.state,
    )
    text = (
        f"The bot's database was away when {deployment.kind} "
        f"#{deployment.id} ended ({outcome.state}): that is recorded now, and "
        f"{deployment.environment} is unlocked."
    )
    await post_in_thread(services, where_shown(ended), blocks.notice(text))
    return ended
