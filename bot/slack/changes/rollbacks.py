"""/rollback's background work: list, back up, roll back (production via an approver), undo a
deploy, and the follow-up checks after a rollback.

- `listing`: what each host keeps, newest first, and what `/rollback <env>` would do now.
- `backup`: the runbook's Manual Backups, under the environment lock, shown like a deploy.
- `rollback_to`: the lock (refused at once with who holds it) → read the hosts and plan
  (bot/runbook/rollback_plan.py; an unknown id or nothing to roll back to is answered privately and
  changes nothing) → production asks an approver (`start_approved` runs it, once) → `start`.
- `undo_deploy`: the deploy watch's Roll back button: the same procedure, planned from what
  that deploy changed (the deployed release is marked bad).
- `start`: lock (store) → the procedure, one checklist message updated in place, failures'
  output in its thread → then the rest of the Rollback Checklist, each a line of the same
  message: an incident when it failed (services.incidents.open_incident — it pages), a summary
  in slack.alerts_channel, and follow-up checks in the thread.
- `followup_tick`: one follow-up check. The checks are durable timers: a restarted bot carries
  on with them and says in the thread that it restarted and how many checks it missed.

The record of a rollback: its deployments row (who, approver, what each host ran and runs,
every step with its output; `/deploy history`), the audit log, the summary in the alerts
channel, and — only when it failed — an incident. A successful rollback opens none: the
incident that led to it (if any) is the one people are working on, and paging the escalation
path for a rollback that worked would page people for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Environment
from bot.process import THIS_PROCESS
from bot.runbook.changes import rollback, rollback_plan
from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.checklist import ChecklistItem
from bot.runbook.changes.progress import Finished, Outcome
from bot.runbook.changes.rollback import ManualBackup, Rollback
from bot.runbook.changes.rollback_plan import Move, Named, RollbackPlan, RollbackRefused
from bot.runbook.health.health import Health
from bot.runbook.incidents.escalation import incident_name
from bot.slack import blocks
from bot.slack.changes import approvals, deploy_blocks, rollback_blocks
from bot.slack.changes.deploy_blocks import DeployView
from bot.slack.changes.deployments import (
    WATCH_TIMER,
    Run,
    apply_recorded,
    blank_view,
    hosts_opener,
    in_thread,
    message_ref,
    page_interrupted_rollback,
    tell,
)
from bot.slack.chat import ChatError, Conversation, Message, MessageRef
from bot.slack.paced_chat import Priority
from bot.slack.services import Services
from bot.store import RUNNING, Approval, Deployment, LockHeld, StoreError, Timer

log = logging.getLogger(__name__)

FOLLOWUP_TIMER = "rollback.followup"


# --- /rollback list -------------------------------------------------------------------------


async def listing(services: Services, env: Environment, conversation: Conversation) -> str:
    found = await rollback_plan.survey(env, hosts_opener(services))
    message = rollback_blocks.listing(found, rollback_plan.choose(found, None))
    await tell(conversation, message)
    return message.text


# --- running one under the lock ---------------------------------------------------------------


async def _begin(
    services: Services,
    *,
    kind: str,
    env: Environment,
    requested_by: str,
    version: str | None,
    approved_by: str | None,
    conversation: Conversation,
) -> Deployment | str:
    """Lock the environment and record the run; else tell the requester why not (returned)."""
    try:
        began = await asyncio.to_thread(
            services.store.begin_deployment,
            kind=kind,
            environment=env.name,
            requested_by=requested_by,
            version=version,
            options={},
            owner=THIS_PROCESS,
            approved_by=approved_by,
            channel=conversation.channel_id,
        )
    except StoreError as exc:
        log.error("%s of %s not started: the store failed (%s)", kind, env.name, exc)
        text = (
            f"The {kind} of {env.name} did not start: the bot's database is unavailable, so the "
            "environment cannot be locked. Nothing ran."
        )
        await tell(conversation, blocks.notice(text, ":x:"))
        return "not started: store unavailable"
    if isinstance(began, LockHeld):
        await tell(conversation, deploy_blocks.locked(env.name, began.lock, kind))
        return f"refused: {env.name} is locked by {began.lock.holder}"
    return began


async def backup(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    """/rollback backup <env>: archive what runs now on every host (Manual Backups)."""
    began = await _begin(
        services,
        kind="backup",
        env=env,
        requested_by=user_id,
        version=None,
        approved_by=None,
        conversation=conversation,
    )
    if isinstance(began, str):
        return began
    procedure = ManualBackup(env, hosts_opener(services), clock=services.store.clock)
    view = DeployView(
        kind="backup",
        environment=env.name,
        version=None,
        requested_by=user_id,
        deployment_id=began.id,
        started_at=began.started_at,
        steps=rollback.BACKUP_STEPS,
        title=rollback.backup_title(env.name),
    )
    run = Run(services, began, view, conversation, cancellable=False)
    outcome = await run.execute(procedure.run())
    return outcome.summary


# --- /rollback <env> [<id>] ---------------------------------------------------------------


async def rollback_to(
    services: Services,
    env: Environment,
    choice: Named | None,
    user_id: str,
    conversation: Conversation,
) -> str:
    held = await asyncio.to_thread(services.store.environment_lock, env.name)
    if held is not None:
        await tell(conversation, deploy_blocks.locked(env.name, held, "rollback"))
        return f"refused: {env.name} is locked by {held.holder}"
    planned = await rollback_plan.plan_rollback(env, hosts_opener(services), choice)
    if isinstance(planned, RollbackRefused):
        await tell(conversation, blocks.notice(planned.reason, ":no_entry:"))
        return f"refused: {planned.reason}"
    if env.requires_approval:
        return await _ask(services, env, planned, user_id, conversation)
    return await start(services, env, planned, user_id, None, conversation)


async def _ask(
    services: Services,
    env: Environment,
    plan: RollbackPlan,
    user_id: str,
    conversation: Conversation,
) -> str:
    checklist = [
        ChecklistItem(
            move.host,
            "passed",
            f"runs {_ran(move)} → {plan.to_text}"
            + (" (restored into a new release)" if move.backup else " (an instant switch)"),
        )
        for move in plan.moves
    ] + [ChecklistItem(host, "passed", "already runs it: left as is") for host in plan.staying]
    steps = [
        title
        for key, title in rollback.STEPS
        if key not in ("lock", "unlock") and not (key == "restore" and plan.kind == "release")
    ]
    asked = await approvals.ask(
        services,
        kind="rollback",
        environment=env.name,
        requested_by=user_id,
        timeout=env.deploy.approval_timeout,
        version=plan.version or "",
        flags=[],
        hosts=[m.host for m in plan.moves] + list(plan.staying),
        checklist=checklist,
        plan=steps,
        channel=conversation.channel_id,
        response_url=conversation.response_url,
        extra={"plan": plan.as_dict(), "target": plan.target_line()},
    )
    if asked.approval is None:
        await tell(conversation, blocks.notice(asked.problem or "not asked", ":x:"))
        return f"not asked: {asked.problem}"
    await tell(
        conversation,
        deploy_blocks.approval_asked(
            asked.approval,
            asked.approval.channel,
            approvals.timeout_text(env.deploy.approval_timeout),
        ),
    )
    return f"approval #{asked.approval.id} requested for a rollback to {plan.target_line()}"


def _ran(move: Move) -> str:
    if move.current_version:
        return show_version(move.current_version)
    return f"release {move.current}" if move.current else "a hand-made install"


async def start_approved(services: Services, approval: Approval) -> str:
    """Run the rollback an approver just approved (only the winning press calls this)."""
    payload = approval.payload
    channel = str(payload.get("channel") or approval.channel or "")
    response_url = payload.get("response_url")
    conversation = Conversation(
        services.chat,
        channel,
        approval.requested_by,
        str(response_url) if isinstance(response_url, str) else None,
    )
    env = services.config.environments.get(approval.environment)
    if env is None:
        problem = f"{approval.environment} is no longer in the config"
    else:
        try:
            plan = RollbackPlan.from_dict(payload.get("plan"))
            if plan.environment != env.name:
                raise ValueError(f"the plan is for {plan.environment}, not {env.name}")
        except (KeyError, TypeError, ValueError) as exc:
            log.error("approval #%d: its rollback plan cannot be read (%s)", approval.id, exc)
            problem = "its plan cannot be read (the bot's log has why)"
        else:
            return await start(
                services, env, plan, approval.requested_by, approval.decided_by, conversation
            )
    text = f"The rollback approved in request #{approval.id} did not start: {problem}."
    await tell(conversation, blocks.notice(text, ":x:"))
    return f"approval #{approval.id}: {problem}"


# --- the deploy watch's Roll back button ------------------------------------------------------


async def undo_deploy(
    services: Services, deployment_id: int, user_id: str, conversation: Conversation
) -> str:
    """Undo exactly that deploy: its hosts go back to what they ran before it."""
    store = services.store
    deployment = await asyncio.to_thread(store.deployment, deployment_id)
    if deployment is None or deployment.kind != "deploy":
        await tell(conversation, blocks.notice(f"There is no deploy #{deployment_id}."))
        return "refused: no such deploy"
    env = services.config.environments.get(deployment.environment)
    if env is None:
        await tell(conversation, blocks.notice(f"{deployment.environment} is gone."))
        return "refused: environment gone"
    if deployment.state != "succeeded":
        ended = deploy_blocks.OUTCOME_WORDS.get(deployment.state, deployment.state)
        text = f"Deploy #{deployment_id} {ended}: there is nothing of it to roll back from here."
        await tell(conversation, blocks.notice(text))
        return "refused: not a succeeded deploy"
    # What changed the environment since (a backup changes nothing; a deploy that failed
    # before its switch neither, and a host it did change fails the plan below).
    succeeded = await asyncio.to_thread(store.deployments, env.name, state="succeeded", limit=20)
    latest = [d for d in succeeded if d.kind != "backup"]
    if latest and latest[0].id != deployment_id:
        text = (
            f"{latest[0].kind.capitalize()} #{latest[0].id} changed {env.name} after deploy "
            f"#{deployment_id}: use /rollback {env.name} to choose what to go back to."
        )
        await tell(conversation, blocks.notice(text))
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
        await tell(conversation, blocks.notice(planned.reason, ":no_entry:"))
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
) -> str:
    """Lock, run the rollback in one message, then its summary, incident and follow-up."""
    began = await _begin(
        services,
        kind="rollback",
        env=env,
        requested_by=requested_by,
        version=plan.version,
        approved_by=approved_by,
        conversation=conversation,
    )
    if isinstance(began, str):
        return began
    if plan.undoing is not None:
        await services.scheduler.cancel(WATCH_TIMER, str(plan.undoing))
    procedure = Rollback(
        plan,
        env,
        services.config,
        prober=services.health.prober,
        open_hosts=hosts_opener(services),
        requested_by=requested_by,
        clock=services.store.clock,
    )
    view = DeployView(
        kind="rollback",
        environment=env.name,
        version=plan.version,
        requested_by=requested_by,
        approved_by=approved_by,
        deployment_id=began.id,
        started_at=began.started_at,
        steps=rollback.STEPS,
        title=plan.title,
    )
    run = Run(services, began, view, conversation, cancellable=False)
    try:
        outcome = await run.execute(procedure.run())
    except asyncio.CancelledError:
        # The bot is stopping mid-rollback: Run marked it interrupted; it still pages.
        interrupted = await asyncio.to_thread(services.store.deployment, began.id)
        if interrupted is not None and interrupted.state == "interrupted":
            with contextlib.suppress(Exception):
                await asyncio.shield(page_interrupted_rollback(services, interrupted))
        raise
    await _after(services, began.id, env, outcome)
    return outcome.summary


async def _step(
    services: Services, deployment_id: int, step: str, state: str, detail: str
) -> int | None:
    """A line of the checklist done after the run (it shows after the outcome)."""
    store = services.store
    try:
        step_id = await asyncio.to_thread(store.record_step, deployment_id, step, "", state, detail)
        if state != "running":
            await asyncio.to_thread(store.finish_step, step_id, state, detail)
    except StoreError as exc:
        log.error("rollback #%d: step %s not recorded: %s", deployment_id, step, exc)
        return None
    return int(step_id)


async def _after(
    services: Services, deployment_id: int, env: Environment, outcome: Outcome
) -> None:
    store = services.store
    try:
        deployment = await asyncio.to_thread(store.deployment, deployment_id)
    except StoreError as exc:
        log.error("rollback #%d: not read back (%s); no summary or follow-up", deployment_id, exc)
        deployment = None
    if deployment is None or deployment.state == RUNNING:
        return
    ok = deployment.state == "succeeded"
    ref = message_ref(deployment)
    incident = await _incident(services, deployment, env, ok, ref)
    summary_ref = await _notify(services, deployment, incident)
    if ok:
        await _start_followup(services, deployment, env, summary_ref)
    else:
        await _step(
            services,
            deployment.id,
            "followup",
            "skipped",
            "the rollback did not complete: the incident takes it from here",
        )
    await refresh(services, deployment.id)


async def _incident(
    services: Services,
    deployment: Deployment,
    env: Environment,
    ok: bool,
    ref: MessageRef | None,
) -> str | None:
    if ok:
        await _step(
            services,
            deployment.id,
            "incident",
            "ok",
            f"rollback #{deployment.id} is recorded (steps, hosts, who; /deploy history "
            f"{env.name}) with the summary; no incident opened: the rollback succeeded",
        )
        return None
    severity = 1 if env.requires_approval else 2
    try:
        incident, _ = await services.incidents.open_incident(
            f"Rollback #{deployment.id}: {deployment.summary}",
            severity,
            source="rollback",
            link=deployment.permalink,
            opened_by=deployment.requested_by,
            channel=deployment.channel,
            dedupe_key=f"rollback:{deployment.id}",
        )
    except (StoreError, ValueError) as exc:
        log.error(
            "rollback #%d of %s failed and no incident could be opened (%s): someone must be "
            "paged by hand",
            deployment.id,
            env.name,
            exc,
        )
        await in_thread(
            services, ref, rollback_blocks.page_someone(env.name, deployment.id, str(exc))
        )
        await _step(
            services,
            deployment.id,
            "incident",
            "failed",
            "no incident could be opened (the bot's database failed): page the on-call "
            "engineer now",
        )
        return "No incident could be opened: page the on-call engineer now."
    name = incident_name(incident.id)
    text = f"{name} opened (SEV {severity}): the escalation path is being paged"
    await _step(services, deployment.id, "incident", "ok", text)
    return text


async def _notify(
    services: Services, deployment: Deployment, incident: str | None
) -> MessageRef | None:
    alerts = services.config.slack.alerts_channel
    if alerts is None:
        await _step(
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
        await _step(
            services,
            deployment.id,
            "notify",
            "failed",
            f"not posted in the alerts channel ({alerts}): Slack said {exc.error} (invite the "
            "bot there)",
        )
        return None
    await _step(services, deployment.id, "notify", "ok", f"posted in the alerts channel ({alerts})")
    return ref


async def refresh(services: Services, deployment_id: int) -> None:
    """Show the checklist as the store has it: the run's steps, its outcome, then the lines
    done after it (follow-up, summary, incident)."""
    store = services.store
    try:
        deployment = await asyncio.to_thread(store.deployment, deployment_id)
        steps = await asyncio.to_thread(store.deployment_steps, deployment_id)
    except StoreError as exc:
        log.error("rollback #%d: checklist not refreshed: %s", deployment_id, exc)
        return
    ref = message_ref(deployment)
    if deployment is None or ref is None:
        return
    view = blank_view(deployment)
    apply_recorded(view, [s for s in steps if s.step not in rollback.AFTER_RUN])
    if deployment.state != RUNNING:
        took = deployment.duration.total_seconds() if deployment.duration else 0.0
        outcome = Outcome(
            deployment.state,
            deployment.summary,
            deployment.version,
            seconds=took,
            cancelled_by=(
                deployment.cancel_requested_by if deployment.state == "cancelled" else None
            ),
        )
        view.apply(Finished(outcome))
    apply_recorded(view, [s for s in steps if s.step in rollback.AFTER_RUN])
    try:
        await services.chat.update(ref, view.message())
    except ChatError as exc:
        log.warning("rollback #%d: checklist not updated: %s", deployment_id, exc.error)


# --- follow-up checks -------------------------------------------------------------------------


@dataclass
class FollowUp:
    """A rollback's follow-up checks, as its timer's payload keeps them between checks."""

    deployment: int
    every: timedelta
    until: datetime
    total: int
    due: datetime
    owner: str
    step: int | None = None
    checks: int = 0
    failures: int = 0
    failing: bool = False
    missed: int = 0
    last_reason: str = ""
    summary: MessageRef | None = None

    def as_payload(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "every": self.every.total_seconds(),
            "until": self.until.isoformat(),
            "total": self.total,
            "due": self.due.isoformat(),
            "owner": self.owner,
            "step": self.step,
            "checks": self.checks,
            "failures": self.failures,
            "failing": self.failing,
            "missed": self.missed,
            "last_reason": self.last_reason,
            "summary": [self.summary.channel, self.summary.ts] if self.summary else None,
        }

    @classmethod
    def from_payload(cls, data: dict[str, object]) -> FollowUp:
        summary = data.get("summary")
        step = data.get("step")
        return cls(
            deployment=int(data["deployment"]),  # type: ignore[call-overload]
            every=timedelta(seconds=float(data["every"])),  # type: ignore[arg-type]
            until=datetime.fromisoformat(str(data["until"])),
            total=int(data["total"]),  # type: ignore[call-overload]
            due=datetime.fromisoformat(str(data["due"])),
            owner=str(data.get("owner", "")),
            step=step if isinstance(step, int) else None,
            checks=int(data.get("checks", 0)),  # type: ignore[call-overload]
            failures=int(data.get("failures", 0)),  # type: ignore[call-overload]
            failing=bool(data.get("failing")),
            missed=int(data.get("missed", 0)),  # type: ignore[call-overload]
            last_reason=str(data.get("last_reason", "")),
            summary=MessageRef(str(summary[0]), str(summary[1]))
            if isinstance(summary, list) and len(summary) == 2
            else None,
        )


async def _start_followup(
    services: Services,
    deployment: Deployment,
    env: Environment,
    summary: MessageRef | None,
) -> None:
    every, span = env.deploy.followup_every, env.deploy.followup_for
    now = services.store.clock()
    total = max(1, int(span / every))
    until = now + every * total
    follow = FollowUp(
        deployment.id, every, until, total, now + every, THIS_PROCESS, summary=summary
    )
    follow.step = await _step(
        services,
        deployment.id,
        "followup",
        "running",
        f"a check every {human_duration(every.total_seconds())} until {deploy_blocks.when(until)}"
        f" ({total} checks), each in the thread",
    )
    try:
        await services.scheduler.schedule(
            FOLLOWUP_TIMER, str(deployment.id), follow.due, follow.as_payload()
        )
    except StoreError as exc:
        log.error("rollback #%d: follow-up checks not scheduled: %s", deployment.id, exc)
        if follow.step is not None:
            await _finish_step(
                services, follow.step, "failed", "not scheduled: the bot's database failed"
            )
        return
    await in_thread(
        services,
        message_ref(deployment),
        rollback_blocks.followup_started(
            env.name, every, until, total, services.config.slack.alerts_channel
        ),
    )


async def _finish_step(services: Services, step_id: int, state: str, detail: str) -> None:
    try:
        await asyncio.to_thread(services.store.finish_step, step_id, state, detail)
    except StoreError as exc:
        log.error("follow-up step not recorded: %s", exc)


async def followup_tick(services: Services, timer: Timer) -> None:
    """One follow-up check: post it, alert on a change to failing, schedule the next or end."""
    follow = FollowUp.from_payload(timer.payload)
    store = services.store
    deployment = await asyncio.to_thread(store.deployment, follow.deployment)
    if deployment is None or deployment.state != "succeeded":
        return
    env = services.config.environments.get(deployment.environment)
    if env is None:
        log.warning(
            "rollback #%d: %s is gone from the config; follow-up ended",
            deployment.id,
            deployment.environment,
        )
        return
    ref = message_ref(deployment)
    now = store.clock()
    newer = [
        d
        for d in await asyncio.to_thread(store.deployments, env.name, limit=20)
        if d.kind != "backup" and d.id > deployment.id
    ]
    if newer:
        changed = newer[-1]
        text = (
            f"Follow-up checks stopped after {follow.checks} of {follow.total}: "
            f"{changed.kind} #{changed.id} changed {env.name} since."
        )
        await _finish_followup(services, deployment, follow, text)
        return
    if follow.owner != THIS_PROCESS:
        missed = max(0, int((now - follow.due) / follow.every))
        follow.missed += missed
        await in_thread(
            services, ref, rollback_blocks.followup_resumed(missed, follow.due, now, follow.until)
        )
        follow.owner = THIS_PROCESS
    result = await services.health.check(env)
    failed = result.health is Health.UNHEALTHY
    reason = result.reasons[0] if result.reasons else result.health.value
    expected = deployment.version
    if not failed and expected and result.version and result.version != expected:
        failed = True
        reason = f"it reports {show_version(result.version)}, not {show_version(expected)}"
    follow.checks += 1
    number = follow.checks + follow.missed
    await in_thread(
        services, ref, rollback_blocks.followup_check(number, follow.total, result, failed, reason)
    )
    if failed:
        follow.failures += 1
        follow.last_reason = reason
    if failed != follow.failing:
        follow.failing = failed
        if failed:
            alert = rollback_blocks.followup_alert(
                env.name, deployment, number, follow.total, reason
            )
        else:
            alert = rollback_blocks.followup_recovered(env.name, deployment, number, follow.total)
        await _alert(services, alert)
    next_due = follow.due + follow.every
    if next_due <= now:
        next_due = now + follow.every
    # A check that falls due within a second of the end still counts: it is the last one.
    if next_due > follow.until + timedelta(seconds=1) or number >= follow.total:
        await _finish_followup(
            services, deployment, follow, _done_text(env.name, deployment, follow)
        )
        return
    follow.due = next_due
    await services.scheduler.schedule(
        FOLLOWUP_TIMER, str(deployment.id), next_due, follow.as_payload()
    )


def _done_text(env: str, deployment: Deployment, follow: FollowUp) -> str:
    checks = f"{follow.checks} check{'s' if follow.checks != 1 else ''}"
    missed = f"; {follow.missed} missed while the bot was down" if follow.missed else ""
    if follow.failures:
        return (
            f"Follow-up checks done: {follow.failures} of {checks} failed on {env} after the "
            f"rollback (last: {follow.last_reason}{missed})."
        )
    on = f" on {show_version(deployment.version)}" if deployment.version else ""
    return f"Follow-up checks done: {env} stayed healthy{on} ({checks}, all passed{missed})."


async def _finish_followup(
    services: Services, deployment: Deployment, follow: FollowUp, text: str
) -> None:
    failed = follow.failures > 0
    await in_thread(services, message_ref(deployment), rollback_blocks.followup_done(text, failed))
    if follow.step is not None:
        await _finish_step(services, follow.step, "failed" if failed else "ok", text)
    if follow.summary is not None:
        try:
            await services.pacer.lane(Priority.ROUTINE).update(
                follow.summary, rollback_blocks.summary(deployment, followup=text)
            )
        except ChatError as exc:
            log.warning("rollback #%d: summary not updated: %s", deployment.id, exc.error)
    await refresh(services, deployment.id)


async def _alert(services: Services, message: Message) -> None:
    alerts = services.config.slack.alerts_channel
    if alerts is None:
        log.warning(
            "a follow-up alert had nowhere to go: set slack.alerts_channel (%s)", message.text
        )
        return
    try:
        await services.pacer.lane(Priority.ROUTINE).post(alerts, message)
    except ChatError as exc:
        log.error(
            "follow-up alert not posted in %s (Slack said %s): %s", alerts, exc.error, message.text
        )
