"""Changes whose bot died: a run left 'running' by a bot that is gone (its process not alive,
or its heartbeat stale) is marked interrupted, its message and thread say so, and its lock is
freed — at start-up and every half minute after, by any running replica. A rollback cut short
also pages. A lock taken by hand stays."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.process import THIS_PROCESS, process_alive
from bot.runbook.changes.progress import Finished, Outcome
from bot.slack.changes.change_blocks import ChangeView
from bot.slack.changes.run import interrupted_summary, tell_interrupted, where_shown
from bot.slack.chat import ChatError
from bot.slack.services import Services
from bot.store import RUNNING, StoreError

log = logging.getLogger(__name__)

# A running change whose heartbeat is older than this belongs to a bot that is gone.
STALE_AFTER = timedelta(seconds=90)
RECOVERY_EVERY = timedelta(seconds=30)


async def recover_interrupted(services: Services) -> int:
    """Changes whose bot died: mark interrupted, say so in their thread, free their lock."""
    store = services.store
    try:
        running = await asyncio.to_thread(store.deployments, state=RUNNING, limit=500)
    except StoreError as exc:
        log.error("interrupted deployments not looked for: %s", exc)
        return 0
    now = store.clock()
    recovered = 0
    for deployment in running:
        if deployment.owner == THIS_PROCESS:
            continue
        alive = process_alive(deployment.owner)
        if alive is True or (alive is None and now - deployment.heartbeat_at < STALE_AFTER):
            continue
        summary = interrupted_summary(deployment)
        try:
            ended = await asyncio.to_thread(store.interrupt_deployment, deployment.id, summary)
            if ended is None:
                continue  # another replica got there first
            steps = await asyncio.to_thread(store.deployment_steps, deployment.id)
        except StoreError as exc:
            log.error("deployment #%d not marked interrupted: %s", deployment.id, exc)
            continue
        recovered += 1
        log.warning(
            "%s #%d of %s was interrupted (its bot %s stopped); lock released",
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
    return recovered
