"""/rollback: list, back up, roll back (production via an approver), undo a deploy, and the rest
of the Rollback Checklist once a rollback has run.

- `listing`: what each host keeps, newest first, and what `/rollback <env>` would do now.
- `backup`: the runbook's Manual Backups, one ChangeRun (run.py) like any change.
- `rollback_to`: refused at once while the environment is locked → read the hosts and plan
  (bot/runbook/changes/rollback_plan.py; an unknown id or nothing to roll back to is answered
  privately and changes nothing) → production asks an approver (approval.py; `start_approved`
  runs it, once) → `start`.
- `undo_deploy`: the deploy aftercare's Roll back button: the same procedure, planned from what
  that deploy changed (the deployed release is marked bad).
- `start`: one ChangeRun of the procedure (bot/runbook/changes/rollback.py), then the rest of
  the Rollback Checklist, each a line of the same message: an incident when it failed
  (rollback_incident.py — it pages), a summary in slack.alerts_channel, and the follow-up
  checks (aftercare.py).

The record of a rollback: its deployments row (who, approver, what each host ran and runs,
every step with its output; `/deploy history`), the audit log, the summary in the alerts
channel, and — only when it failed — an incident. A successful rollback opens none: the
incident that led to it (if any) is the one people are working on, and paging the escalation
path for a rollback that worked would page people for nothing.
"""

from __future__ import annotations

import asyncio
import logging

from bot.config import Environment
from bot.runbook.changes import rollback_plan
from bot.runbook.changes.backup import ManualBackup, backup_title
from bot.runbook.changes.checklist import rollback_checklist
from bot.runbook.changes.rollback import Rollback, steps_to_run
from bot.runbook.changes.rollback_plan import Named, RollbackPlan, RollbackRefused
from bot.runbook.incidents.escalation import incident_name
from bot.slack import blocks
from bot.slack.changes import aftercare, approval, locks, rollback_blocks
from bot.slack.changes.approval import ApprovalRequest, NotStartable
from bot.slack.changes.change_blocks import OUTCOME_WORDS
from bot.slack.changes.rollback_incident import open_rollback_incident
from bot.slack.changes.run import (
    Change,
    ChangeRun,
    answer,
    hosts_opener,
    post_in_thread,
    record_line,
    show_as_recorded,
    where_shown,
)
from bot.slack.chat import ChatError, Conversation, MessageRef
from bot.slack.paced_chat import Priority
from bot.slack.services import Services
from bot.store import RUNNING, Approval, Deployment, StoreError

log = logging.getLogger(__name__)


async def listing(services: Services, env: Environment, conversation: Conversation) -> str:
    found = await rollback_plan.survey(env, hosts_opener(services))
    message = rollback_blocks.listing(found, rollback_plan.choose(found, None))
    await answer(conversation, message)
    return message.text


async def backup(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    """/rollback backup <env>: archive what runs now on every host (Manual Backups)."""
    change = Change("backup", env, user_id, title=backup_title(env.name))
    procedure = ManualBackup(env, hosts_opener(services), clock=services.store.clock)
    run = ChangeRun(services, change, conversation)
    refused = await run.begin()
    if refused is not None:
        return refused
    outcome = await run.execute(procedure)
    return outcome.summary


# --- /rollback <env> [<id>] ---------------------------------------------------------------


async def rollback_to(
    services: Services,
    env: Environment,
    choice: Named | None,
    user_id: str,
    conversation: Conversation,
) -> str:
    refused = await locks.refused_while_locked(services, env, "rollback", conversation)
    if refused is not None:
        return refused
    planned = await rollback_plan.plan_rollback(env, hosts_opener(services), choice)
    if isinstance(planned, RollbackRefused):
        await answer(conversation, blocks.notice(planned.reason, ":no_entry:"))
        return f"refused: {planned.reason}"
    if not env.requires_approval:
        return await start(services, env, planned, user_id, None, conversation)
    asked = ApprovalRequest(
        kind="rollback",
        environment=env,
        requested_by=user_id,
        version=planned.version or "",
        flags=[],
        hosts=[m.host for m in planned.moves] + list(planned.staying),
        checklist=rollback_checklist(planned),
        plan=steps_to_run(planned),
        what=f"a rollback to {planned.target_line()}",
        extra={"plan": planned.as_dict(), "target": planned.target_line()},
    )
    return await approval.ask(services, asked, conversation)


async def start_approved(
    services: Services, approved: Approval, env: Environment, conversation: Conversation
) -> str:
    """Run the rollback an approver just approved: exactly the plan pinned in the request."""
    try:
        plan = RollbackPlan.from_dict(approved.payload.get("plan"))
        if plan.environment != env.name:
            raise ValueError(f"the plan is for {plan.environment}, not {env.name}")
    except (KeyError, TypeError, ValueError) as exc:
        log.error("approval #%d: its rollback plan cannot be read (%s)", approved.id, exc)
        raise NotStartable("its plan cannot be read (the bot's log has why)") from None
    return await start(
        services,
        env,
        plan,
        approved.requested_by,
        approved.decided_by,
        conversation,
        approval_id=approved.id,
    )


async def restore_newest_backup(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    """A recovery checklist's "Restore from most recent backup": `/rollback <env> <backup>`
    with the newest backup every host has (and that never failed a restore)."""
    found = await rollback_plan.survey(env, hosts_opener(services))
    newest = next((b for b in found.backups() if found.everywhere(b) and not b.bad), None)
    if newest is None:
        text = (
            f"No backup of {env.name} is on every host: nothing to restore. "
            f"`/rollback list {env.name}` shows what each host keeps."
        )
        await answer(conversation, blocks.notice(text, ":no_entry:"))
        return "refused: no backup on every host"
    return await rollback_to(services, env, Named("backup", newest.name), user_id, conversation)


# --- the deploy aftercare's Roll back button --------------------------------------------------


async def undo_deploy(
    services: Services, deployment_id: int, user_id: str, conversation: Conversation
) -> str:
    """Undo exactly that deploy: its hosts go back to what they ran before it."""
    store = services.store
    deployment = await asyncio.to_thread(store.deployment, deployment_id)
    if deployment is None or deployment.kind != "deploy":
        await answer(conversation, blocks.notice(f"There is no deploy #{deployment_id}."))
        return "refused: no such deploy"
    env = services.config.environments.get(deployment.environment)
    if env is None:
        await answer(conversation, blocks.notice(f"{deployment.environment} is gone."))
        return "refused: environment gone"
    if deployment.state != "succeeded":
        ended = OUTCOME_WORDS.get(deployment.state, deployment.state)
        text = f"Deploy #{deployment_id} {ended}: there is nothing of it to roll back from here."
        await answer(conversation, blocks.notice(text))
        return "refused: not a succeeded deploy"
    # What changed the environment since (a backup or a restart changes no release; a deploy
    # that failed before its switch neither, and a host it did change fails the plan below).
    succeeded = await asyncio.to_thread(store.deployments, env.name, state="succeeded", limit=20)
    latest = [d for d in succeeded if d.kind not in ("backup", "restart")]
    if latest and latest[0].id != deployment_id:
        text = (
            f"{latest[0].kind.capitalize()} #{latest[0].id} changed {env.name} after deploy "
            f"#{deployment_id}: use /rollback {env.name} to choose what to go back to."
        )
        await answer(conversation, blocks.notice(text))
        return "refused: a later deployment"
    released = {str(info["release"]) for info in deployment.hosts.values() if info.get("release")}
    found = await rollback_plan.survey(env, hosts_opener(services))
    planned = rollback_plan.undo(
        found,
        deployment_id=deployment_id,
        release_id=released.pop() if len(released) == 1 else None,
        version=deployment.version,
        hosts=deployment.hosts,
    )
    if isinstance(planned, RollbackRefused):
        await answer(conversation, blocks.notice(planned.reason, ":no_entry:"))
        return f"refused: {planned.reason}"
    where = Conversation(
        services.chat,
        deployment.channel or conversation.channel_id,
        user_id,
        conversation.response_url,
    )
    return await start(services, env, planned, user_id, None, where)


# --- the run, and the rest of the checklist -------------------------------------------------


async def start(
    services: Services,
    env: Environment,
    plan: RollbackPlan,
    requested_by: str,
    approved_by: str | None,
    conversation: Conversation,
    approval_id: int | None = None,
) -> str:
    """Lock, run the rollback in one message, then its incident, summary and follow-up."""
    change = Change(
        "rollback",
        env,
        requested_by,
        version=plan.version,
        approved_by=approved_by,
        title=plan.title,
        approval_id=approval_id,
    )
    procedure = Rollback(
        plan,
        env,
        services.config,
        prober=services.health.prober,
        open_hosts=hosts_opener(services),
        requested_by=requested_by,
        clock=services.store.clock,
    )
    undoing = plan.undoing

    async def stop_its_checks() -> None:
        if undoing is not None:
            await aftercare.stop(services, undoing)  # no more checks of the deploy it undoes

    run = ChangeRun(services, change, conversation)
    refused = await run.begin()
    if refused is not None:
        return refused
    outcome = await run.execute(procedure, first=stop_its_checks)
    ran = await run.recorded()
    if ran is not None and ran.state != RUNNING:
        await _report(services, ran, env)
    return outcome.summary


async def _report(services: Services, deployment: Deployment, env: Environment) -> None:
    """The Rollback Checklist after the run: incident record, summary, follow-up checks."""
    ok = deployment.state == "succeeded"
    incident = await _incident(services, deployment, env, ok, where_shown(deployment))
    summary = await _notify(services, deployment, incident)
    if ok:
        await aftercare.begin(services, deployment, env, summary=summary)
    else:
        await record_line(
            services,
            deployment.id,
            "followup",
            "skipped",
            "the rollback did not complete: the incident takes it from here",
        )
    await show_as_recorded(services, deployment.id)


async def _incident(
    services: Services,
    deployment: Deployment,
    env: Environment,
    ok: bool,
    ref: MessageRef | None,
) -> str | None:
    if ok:
        await record_line(
            services,
            deployment.id,
            "incident",
            "ok",
            f"rollback #{deployment.id} is recorded (steps, hosts, who; /deploy history "
            f"{env.name}) with the summary; no incident opened: the rollback succeeded",
        )
        return None
    try:
        incident, severity = await open_rollback_incident(
            services, deployment, f"Rollback #{deployment.id}: {deployment.summary}"
        )
    except (StoreError, ValueError) as exc:
        log.error(
            "rollback #%d of %s failed and no incident could be opened (%s): someone must be "
            "paged by hand",
            deployment.id,
            env.name,
            exc,
        )
        await post_in_thread(
            services, ref, rollback_blocks.page_someone(env.name, deployment.id, str(exc))
        )
        await record_line(
            services,
            deployment.id,
            "incident",
            "failed",
            "no incident could be opened (the bot's database failed): page the on-call "
            "engineer now",
        )
        return "No incident could be opened: page the on-call engineer now."
    text = (
        f"{incident_name(incident.id)} opened (SEV {severity}): the escalation path is being paged"
    )
    await record_line(services, deployment.id, "incident", "ok", text)
    return text


async def _notify(
    services: Services, deployment: Deployment, incident: str | None
) -> MessageRef | None:
    alerts = services.config.slack.alerts_channel
    if alerts is None:
        await record_line(
            services,
            deployment.id,
            "notify",
            "skipped",
            "no slack.alerts_channel in the config: nobody else was told",
        )
        return None
    try:
        # The alerts channel is shared with the scheduled alerts: keep Slack's pace there.
        ref = await services.pacer.lane(Priority.ROUTINE).post(
            alerts, rollback_blocks.summary(deployment, incident=incident)
        )
    except ChatError as exc:
        await record_line(
            services,
            deployment.id,
            "notify",
            "failed",
            f"not posted in the alerts channel ({alerts}): Slack said {exc.error} (invite the "
            "bot there)",
        )
        return None
    await record_line(
        services, deployment.id, "notify", "ok", f"posted in the alerts channel ({alerts})"
    )
    return ref
