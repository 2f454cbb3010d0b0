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
from bot.runbook.changes.kinds import step_title
from bot.runbook.changes.progress import Finished, Outcome
from bot.runbook.changes.repair import (
    HostRepair,
    HostRepairer,
    Interrupted,
    hosts_named,
    needs_a_look,
)
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
    repairs = await _put_hosts_right(services, deployment)
    if repairs is None:
        return None  # another replica took it over first
    summary = interrupted_summary(deployment)
    if repairs:
        summary = _repaired_summary(deployment, repairs)
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
    if repairs:
        await post_in_thread(services, ref, blocks.notice(_repairs_text(repairs)))
        await _incident_for(services, ended, repairs)
    return ended


async def _put_hosts_right(services: Services, dead: Deployment) -> list[HostRepair] | None:
    """Look at the hosts of a run cut short while on them, and repair what can be (repair.py),
    under its own lock: taken over first, so one replica does it. [] when there was nothing
    to look at; None when another replica took it over."""
    env = services.config.environments.get(dead.environment)
    interrupted = Interrupted(dead.kind, dead.step, dead.version, dead.hosts)
    if env is None or not needs_a_look(interrupted):
        return []
    store = services.store
    try:
        if not await asyncio.to_thread(store.claim_deployment, dead.id, dead.owner, THIS_PROCESS):
            return None
    except StoreError as exc:
        log.error("deployment #%d not taken over to look at its hosts: %s", dead.id, exc)
        return None
    log.warning(
        "%s #%d of %s was cut short during %s: looking at its hosts",
        dead.kind,
        dead.id,
        dead.environment,
        dead.step,
    )
    await post_in_thread(
        services,
        where_shown(dead),
        blocks.notice(
            f"The bot stopped while {dead.kind} #{dead.id} was on {dead.environment}'s hosts "
            f"({step_title(dead.step)}): looking at each host now, and putting right what it "
            "left.",
            ":mag:",
        ),
    )
    repairer = HostRepairer(
        env,
        services.config,
        prober=services.health.prober,
        open_hosts=run.hosts_opener(services),
        clock=store.clock,
    )
    async with run.running_it(services, dead.id):
        try:
            return await repairer.repair(interrupted)
        except Exception:
            log.exception("deployment #%d: its hosts could not be looked at", dead.id)
            return [
                HostRepair(t, "could not be looked at (the bot's log has why)", False)
                for t in [str(h) for h in env.hosts] or ["local"]
            ]


def _repaired_summary(deployment: Deployment, repairs: list[HostRepair]) -> str:
    head = (
        f"{deployment.kind.capitalize()} #{deployment.id} was interrupted during "
        f"{step_title(deployment.step)}: the bot stopped."
    )
    stuck = hosts_named(repairs)
    if not stuck:
        return (
            f"{head} At restart its hosts were looked at and put right (the thread says how); "
            f"{deployment.environment} is unlocked."
        )
    return (
        f"{head} At restart {', '.join(stuck)} could not be put right: an incident is open. "
        f"{deployment.environment} is unlocked."
    )


def _repairs_text(repairs: list[HostRepair]) -> str:
    lines = [
        f"{':white_check_mark:' if r.repaired else ':x:'} *{r.host}*: {r.said}" for r in repairs
    ]
    return "What the restart found on the hosts:\n" + "\n".join(lines)


async def _incident_for(
    services: Services, deployment: Deployment, repairs: list[HostRepair]
) -> None:
    """Hosts the restart could not put right: an incident naming them (it pages)."""
    stuck = hosts_named(repairs)
    if not stuck:
        return
    env = services.config.environments.get(deployment.environment)
    severity = 1 if env is not None and env.requires_approval else 2
    details = "; ".join(f"{r.host}: {r.said}" for r in repairs if not r.repaired)
    try:
        await services.incidents.open_incident(
            f"{deployment.kind.capitalize()} #{deployment.id} of {deployment.environment} was "
            f"cut short by a bot restart and {', '.join(stuck)} could not be put right: "
            f"{details}",
            severity,
            source="recovery",
            link=deployment.permalink,
            opened_by=deployment.requested_by,
            channel=deployment.channel,
            dedupe_key=f"repair:{deployment.id}",
        )
    except (StoreError, ValueError) as exc:
        log.error(
            "%s #%d: %s not put right and no incident opened (%s): page someone by hand",
            deployment.kind,
            deployment.id,
            ", ".join(stuck),
            exc,
        )


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
