"""/health <env> diagnose: run the diagnosis and keep one message current as hosts answer."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.config import Config, Environment
from bot.runbook.health.diagnose import Diagnosis, diagnose_hosts, memory_history
from bot.runbook.health.health import HealthChecker, HealthResult
from bot.slack.chat import Conversation, Message
from bot.slack.health.diagnose_blocks import diagnosis_message
from bot.slack.live_message import LiveMessage
from bot.store import Store

log = logging.getLogger(__name__)

# Slack allows about 50 chat.update a minute: a diagnosis of hundreds of hosts that lasts a
# minute or more edits its message at most every 2 s, well under it.
EDIT_EVERY_S = 2.0


async def report_diagnosis(
    conversation: Conversation,
    config: Config,
    checker: HealthChecker,
    store: Store,
    env: Environment,
    *,
    requested_by: str,
) -> str:
    """Diagnose every host of env, the message filling in as each answers; returns its text."""
    diagnosis = Diagnosis.start(env, config.diagnose.log_lines, config.thresholds)
    started = time.monotonic()

    def render() -> Message:
        elapsed = time.monotonic() - started
        return diagnosis_message(diagnosis, requested_by=requested_by, seconds=elapsed)

    live = LiveMessage(conversation, min_interval_s=EDIT_EVERY_S)
    await live.show(render())
    bot_check = asyncio.create_task(_bot_check(checker, env))
    try:
        diagnosis.memory = await memory_history(store, env)
        async for index, host in diagnose_hosts(env, config.ssh, diagnosis.spec):
            diagnosis.hosts[index] = host
            if bot_check.done():
                diagnosis.bot_check = bot_check.result()
            await live.show(render)  # built only when an edit is due
        diagnosis.bot_check = await bot_check
    finally:
        bot_check.cancel()
    diagnosis.done = True
    final = render()
    await live.finish(final)
    return final.text


async def _bot_check(checker: HealthChecker, env: Environment) -> HealthResult | None:
    """The bot's own /health check of base_url: beside the hosts' own, it tells the network."""
    try:
        return await checker.check(env)
    except Exception:  # the hosts' findings stand without it
        log.exception("the bot's own check of %s failed during a diagnosis", env.name)
        return None
