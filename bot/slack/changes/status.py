"""`/deploy status` (what runs now, the locks, the last CI runs) and `/deploy history`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.runbook.changes.ci import CiClient, CiError, CiRun
from bot.slack.changes import status_blocks
from bot.slack.changes.run import answer
from bot.slack.chat import Conversation
from bot.slack.services import Services
from bot.store import RUNNING


async def status(services: Services, env_name: str | None, conversation: Conversation) -> str:
    store = services.store
    running = await asyncio.to_thread(store.deployments, env_name, state=RUNNING, limit=50)
    locks = [
        lk
        for lk in await asyncio.to_thread(store.environment_locks)
        if env_name is None or lk.environment == env_name
    ]
    # The default branch and its last runs; or why CI cannot be read; None: no `ci` section.
    ci: tuple[str, Sequence[CiRun]] | str | None = None
    if services.config.ci is not None:
        try:
            ci = await CiClient(services.config.ci, services.http).recent_runs()
        except CiError as exc:
            ci = str(exc)
    message = status_blocks.deploy_status(
        scope=env_name or "all environments",
        running=running,
        locks=locks,
        ci=ci,
        workflow=services.config.ci.workflow if services.config.ci else None,
    )
    await answer(conversation, message)
    return message.text


async def history(services: Services, env_name: str, conversation: Conversation) -> str:
    deployments = await asyncio.to_thread(services.store.deployments, env_name, limit=10)
    message = status_blocks.deploy_history(env_name, deployments)
    await answer(conversation, message)
    return message.text
