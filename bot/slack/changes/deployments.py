"""/deploy's background work: run a deployment under its lock and show it in one message.

- `deploy`: lock (store) → the procedure (bot/runbook/deploy.py) → one checklist message
  updated in place, failing output in its thread → unlock → the post-deploy watch.
- `ask_approval` / `start_approved`: production waits for an approver (bot/slack/approvals.py).
  (The watch's Roll back button is a rollback: bot/slack/rollbacks.py `undo_deploy`.)
- `recover_interrupted`: a deployment left 'running' by a bot that died is marked interrupted,
  said so in its thread, and its lock freed — at start-up and every half minute after.
- Locks by hand: `lock`, `unlock`, `free_anyway`, and the holder's reminder.
- `watch_tick`: one health check of the post-deploy watch (a durable timer, so a restart
  does not lose it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Environment
from bot.process import THIS_PROCESS, process_alive
from bot.runbook.changes import rollback, rollback_plan
from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.checklist import pre_deployment_checklist
from bot.runbook.changes.ci import CiClient, CiError
from bot.runbook.changes.deploy import STEPS, Deploy, DeployOptions, DeployRequest, OpenHosts
from bot.runbook.changes.progress import (
    Event,
    Finished,
    Outcome,
    StepDone,
    StepFailed,
    StepRecorder,
    StepSkipped,
    StepStarted,
)
from bot.runbook.changes.releases import is_version
from bot.runbook.health.health import Health
from bot.slack import blocks
from bot.slack.changes import approvals, deploy_blocks
from bot.slack.changes.deploy_blocks import DeployView
from bot.slack.chat import ChatError, Conversation, Message, MessageRef
from bot.slack.live_message import LiveMessage
from bot.slack.services import Services
from bot.store import (
    RUNNING,
    Approval,
    Deployment,
    DeploymentStep,
    EnvironmentLock,
    LockHeld,
    StoreError,
)
from bot.transport import open_transports
from bot.transport.base import Shell, Transport
from bot.transport.local import LocalTransport

log = logging.getLogger(__name__)

WATCH_TIMER = "deploy.watch"
LOCK_REMINDER_TIMER = "deploy.lock_reminder"
HEARTBEAT_EVERY = timedelta(seconds=10)
# A running deployment whose heartbeat is older than this belongs to a bot that is gone.
STALE_AFTER = timedelta(seconds=90)
RECOVERY_EVERY = timedelta(seconds=30)
# Failures told in the thread one by one; past this (a hundred hosts down) the checklist says it.
MAX_THREAD_FAILURES = 10
STEPS_BY_KIND = {"deploy": STEPS, "rollback": rollback.STEPS, "backup": rollback.BACKUP_STEPS}


# --- the wiring the procedures need ---------------------------------------------------------


def hosts_opener(services: Services) -> OpenHosts:
    ssh = services.config.ssh
    return lambda env: open_transports(env, ssh)


def local_transport(services: Services) -> Transport:
    return LocalTransport(command_timeout_s=services.config.ssh.command_timeout.total_seconds())


async def tell(conversation: Conversation, message: Message) -> None:
    """Answer the person who asked, privately (their response_url), or in the channel."""
    if conversation.response_url:
        try:
            await conversation.chat.respond(conversation.response_url, message)
            return
        except ChatError as exc:
            log.warning("private answer not delivered (%s); posting in the channel", exc.error)
    await conversation.chat.post(conversation.channel_id, message)


async def in_thread(services: Services, ref: MessageRef | None, message: Message) -> None:
    """A line in the thread of ref's message; a reply Slack refuses is logged, not raised."""
    if ref is None:
        return
    try:
        await services.chat.post(ref.channel, message, thread_ts=ref.ts)
    except ChatError as exc:
        log.warning("thread reply under %s not posted: %s", ref, exc.error)


# --- running one procedure under its lock ---------------------------------------------------


@dataclass
class Run:
    """One locked, recorded procedure shown in one message."""

    services: Services
    deployment: Deployment
    view: DeployView
    conversation: Conversation
    cancellable: bool = True  # a deploy checks for Cancel between steps; a rollback does not

    async def execute(self, events: AsyncIterator[Event]) -> Outcome:
        store = self.services.store
        live = LiveMessage(self.conversation)
        await live.show(self.view.message(cancellable=self.cancellable))
        if live.ref is not None:
            permalink = await self.services.chat.permalink(live.ref)
            try:
                await asyncio.to_thread(
                    store.set_deployment_message,
                    self.deployment.id,
                    live.ref.channel,
                    live.ref.ts,
                    permalink,
                )
            except StoreError as exc:
                log.error("deployment #%d: message not recorded: %s", self.deployment.id, exc)
        recorder = StepRecorder(store, self.deployment.id)
        heartbeat = asyncio.create_task(_heartbeat(self.services, self.deployment.id))
        outcome: Outcome | None = None
        try:
            async for event in events:
                self.view.apply(event)
                await recorder.record(event)
                if isinstance(event, StepFailed) and len(self.view.failures) <= MAX_THREAD_FAILURES:
                    await in_thread(self.services, live.ref, deploy_blocks.failure_detail(event))
                if isinstance(event, Finished):
                    outcome = event.outcome
                await live.show(self.view.message(cancellable=self.cancellable))
        except asyncio.CancelledError:
            # The bot is stopping: say so now and free the lock, rather than leave it to the
            # next start-up's recovery.
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._interrupted(live))
            raise
        except Exception:
            log.exception(
                "%s #%d of %s failed with an internal error",
                self.deployment.kind,
                self.deployment.id,
                self.deployment.environment,
            )
            outcome = Outcome(
                "failed",
                f"{self.deployment.kind.capitalize()} #{self.deployment.id} stopped on an internal "
                "error (the bot's log has the details). Check the hosts with /health and "
                "/deploy status before trying again.",
                self.view.version,
            )
            self.view.apply(Finished(outcome))
        finally:
            heartbeat.cancel()
        if outcome is None:
            outcome = Outcome("failed", "the procedure ended without a result", self.view.version)
            self.view.apply(Finished(outcome))
        state = "succeeded" if outcome.state == "planned" else outcome.state
        try:
            await asyncio.to_thread(
                store.finish_deployment, self.deployment.id, state, outcome.summary
            )
        except StoreError as exc:
            log.error(
                "deployment #%d not finished in the store (%s): its lock on %s stays until "
                "someone runs /deploy unlock or the database is back",
                self.deployment.id,
                exc,
                self.deployment.environment,
            )
        await live.finish(self.view.message())
        return outcome

    async def _interrupted(self, live: LiveMessage) -> None:
        summary = "interrupted: the bot was stopped while this ran"
        ended = await asyncio.to_thread(
            self.services.store.interrupt_deployment, self.deployment.id, summary
        )
        if ended is not None:
            self.view.apply(Finished(Outcome("interrupted", _interrupted_summary(ended))))
            await live.finish(self.view.message())
            await in_thread(self.services, live.ref, deploy_blocks.interrupted(ended))


def _interrupted_summary(deployment: Deployment) -> str:
    return (
        f"{deployment.kind.capitalize()} #{deployment.id} was interrupted during "
        f"{deploy_blocks.STEP_TITLES.get(deployment.step, deployment.step)}: the bot stopped. "
        f"{deployment.environment} is unlocked; check its hosts."
    )


async def _heartbeat(services: Services, deployment_id: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
        try:
            await asyncio.to_thread(
                services.store.update_deployment, deployment_id, heartbeat_at=services.store.clock()
            )
        except StoreError as exc:
            log.error("deployment #%d: heartbeat not recorded: %s", deployment_id, exc)


# --- /deploy <env> ------------------------------------------------------------------------


async def deploy(services: Services, request: DeployRequest, conversation: Conversation) -> str:
    """Run a deploy (or a dry run) now; returns the one-line result for the audit."""
    env = request.environment
    procedure = Deploy(
        request,
        services.config,
        http=services.http,
        prober=services.health.prober,
        open_hosts=hosts_opener(services),
        local=local_transport(services),
        clock=services.store.clock,
    )
    flags = request.options.flags()
    if request.options.dry_run:
        return await _dry_run(services, procedure, request, conversation)
    try:
        began = await asyncio.to_thread(
            services.store.begin_deployment,
            kind="deploy",
            environment=env.name,
            requested_by=request.requested_by,
            version=request.version,
            options=request.options.as_dict(),
            owner=THIS_PROCESS,
            approved_by=request.approved_by,
            channel=conversation.channel_id,
        )
    except StoreError as exc:
        log.error("deploy of %s not started: the store failed (%s)", env.name, exc)
        await tell(
            conversation,
            blocks.notice(
                f"The deploy of {env.name} did not start: the bot's database is unavailable, "
                "so the environment cannot be locked. Nothing ran.",
                ":x:",
            ),
        )
        return "not started: store unavailable"
    if isinstance(began, LockHeld):
        await tell(conversation, deploy_blocks.locked(env.name, began.lock, "deploy"))
        return f"refused: {env.name} is locked by {began.lock.holder}"
    deployment = began

    async def cancelled() -> str | None:
        try:
            current = await asyncio.to_thread(services.store.deployment, deployment.id)
        except StoreError:
            return None
        return current.cancel_requested_by if current else None

    procedure.cancel_requested = cancelled
    view = DeployView(
        kind="deploy",
        environment=env.name,
        version=request.version,
        requested_by=request.requested_by,
        approved_by=request.approved_by,
        flags=flags,
        deployment_id=deployment.id,
        started_at=deployment.started_at,
    )
    outcome = await Run(services, deployment, view, conversation).execute(procedure.run())
    if outcome.state == "succeeded":
        await _start_watch(services, deployment.id, env, outcome.version)
    return outcome.summary


async def _dry_run(
    services: Services, procedure: Deploy, request: DeployRequest, conversation: Conversation
) -> str:
    view = DeployView(
        kind="deploy",
        environment=request.environment.name,
        version=request.version,
        requested_by=request.requested_by,
        flags=request.options.flags(),
    )
    live = LiveMessage(conversation)
    await live.show(view.message())
    outcome: Outcome | None = None
    async for event in procedure.run():
        view.apply(event)
        if isinstance(event, Finished):
            outcome = event.outcome
    await live.finish(view.message())
    for part in view.plan_messages():
        await in_thread(services, live.ref, part)
    if live.ref is None:
        for part in view.plan_messages():
            await tell(conversation, part)
    return outcome.summary if outcome else "dry run"


# --- production: ask, then start on approval -----------------------------------------------


async def ask_approval(
    services: Services, request: DeployRequest, conversation: Conversation
) -> str:
    env = request.environment
    lock = await asyncio.to_thread(services.store.environment_lock, env.name)
    if lock is not None:
        await tell(conversation, deploy_blocks.locked(env.name, lock, "request"))
        return f"refused: {env.name} is locked by {lock.holder}"
    version = request.version
    if version is None:
        # The approver approves a version, not whatever the version command says later.
        result = await local_transport(services).run(
            Shell(env.deploy.version), cwd=str(env.deploy.workdir)
        )
        printed = result.stdout.strip()
        if not result.ok or not is_version(printed):
            said = f"exit status {result.exit_status}" if not result.ok else repr(printed[:64])
            problem = (
                f"`{env.deploy.version}` did not print a version ({said}), so there is nothing "
                f"to ask approval for. Give one: /deploy {env.name} <version>."
            )
            await tell(conversation, blocks.notice(problem, ":x:"))
            return "not asked: no version"
        version = printed
    pinned = DeployRequest(env, version, request.options, request.requested_by)
    checklist = await pre_deployment_checklist(
        pinned, services.config, http=services.http, open_hosts=hosts_opener(services)
    )
    plan = [
        title
        for key, title in STEPS
        if not (key == "test" and request.options.skip_tests)
        and not (key == "backup" and request.options.no_backup)
        and not (key == "smoke" and env.deploy.smoke is None)
        and not (key == "checklist" and services.config.ci is None)
    ]
    asked = await approvals.ask(
        services,
        kind="deploy",
        environment=env.name,
        requested_by=request.requested_by,
        timeout=env.deploy.approval_timeout,
        version=version,
        flags=request.options.flags(),
        hosts=[str(h) for h in env.hosts] or ["local"],
        checklist=checklist,
        plan=plan,
        channel=conversation.channel_id,
        response_url=conversation.response_url,
        extra={"options": request.options.as_dict()},
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
    return f"approval #{asked.approval.id} requested for {show_version(version)}"


async def start_approved(services: Services, approval: Approval) -> str:
    """Run the deploy an approver just approved (exactly once: only the winning press calls)."""
    env = services.config.environments.get(approval.environment)
    payload = approval.payload
    version = str(payload.get("version") or "")
    if env is None or not is_version(version):
        return f"approval #{approval.id}: {approval.environment} is no longer in the config"
    options = DeployOptions.from_dict(payload.get("options") or {})  # type: ignore[arg-type]
    request = DeployRequest(env, version, options, approval.requested_by, approval.decided_by)
    channel = str(payload.get("channel") or approval.channel or "")
    response_url = payload.get("response_url")
    conversation = Conversation(
        services.chat,
        channel,
        approval.requested_by,
        str(response_url) if isinstance(response_url, str) else None,
    )
    return await deploy(services, request, conversation)


# --- cancel and roll back -----------------------------------------------------------------


async def cancel(services: Services, deployment_id: int, user_id: str) -> str:
    """The progress message's Cancel button: the requester or an approver."""
    deployment = await asyncio.to_thread(services.store.deployment, deployment_id)
    if deployment is None:
        return f"There is no deployment #{deployment_id}."
    if user_id != deployment.requested_by and not services.config.access.may_approve(user_id):
        return (
            f"Only <@{deployment.requested_by}> (who asked) or an approver can cancel "
            f"{deployment.kind} #{deployment_id}."
        )
    if not await asyncio.to_thread(services.store.request_cancel, deployment_id, user_id):
        current = await asyncio.to_thread(services.store.deployment, deployment_id)
        if current is not None and current.cancel_requested_by:
            return f"Cancel was already asked for by <@{current.cancel_requested_by}>."
        return f"{deployment.kind.capitalize()} #{deployment_id} is not running any more."
    return (
        f"Cancel requested: {deployment.kind} #{deployment_id} stops before its next step "
        "(never in the middle of a restart); its message will say where it stopped."
    )


# --- after a deploy: watch its health -----------------------------------------------------


async def _start_watch(
    services: Services, deployment_id: int, env: Environment, version: str | None
) -> None:
    duration = env.deploy.watch_duration(env.requires_approval)
    interval = env.check_interval
    now = services.store.clock()
    payload: dict[str, object] = {
        "deployment": deployment_id,
        "until": (now + duration).isoformat(),
        "checks": 0,
        "failures": 0,
        "alerted": False,
        "last_reason": "",
    }
    deployment = await asyncio.to_thread(services.store.deployment, deployment_id)
    ref = message_ref(deployment)
    await in_thread(
        services,
        ref,
        deploy_blocks.watch_started(
            env.name,
            human_duration(duration.total_seconds()),
            human_duration(interval.total_seconds()),
        ),
    )
    await services.scheduler.schedule(WATCH_TIMER, str(deployment_id), now + interval, payload)


def message_ref(deployment: Deployment | None) -> MessageRef | None:
    """Where a deployment's checklist message is, once it was posted."""
    if deployment is None or not deployment.channel or not deployment.message_ts:
        return None
    return MessageRef(deployment.channel, deployment.message_ts)


async def watch_tick(services: Services, payload: dict[str, object]) -> None:
    """One check of the post-deploy watch; schedules the next or posts the result."""
    deployment_id = int(payload["deployment"])  # type: ignore[call-overload]
    deployment = await asyncio.to_thread(services.store.deployment, deployment_id)
    if deployment is None or deployment.state != "succeeded":
        return  # rolled back (or gone) since: the watch has nothing left to watch
    env = services.config.environments.get(deployment.environment)
    if env is None:
        return
    # A newer deploy has its own watch, a rollback its follow-up checks; a backup changes nothing.
    latest = [
        d
        for d in await asyncio.to_thread(services.store.deployments, env.name, limit=10)
        if d.kind != "backup"
    ]
    if latest and latest[0].id != deployment_id:
        return
    result = await services.health.check(env)
    checks = int(payload.get("checks", 0)) + 1  # type: ignore[call-overload]
    failures = int(payload.get("failures", 0))  # type: ignore[call-overload]
    reason = str(payload.get("last_reason", ""))
    failed = result.health is Health.UNHEALTHY
    if (
        not failed
        and deployment.version
        and result.version
        and result.version != deployment.version
    ):
        failed = True
        reason = (
            f"it reports {show_version(result.version)}, not {show_version(deployment.version)}"
        )
    elif failed:
        reason = result.reasons[0] if result.reasons else "unhealthy"
    if failed:
        failures += 1
    ref = message_ref(deployment)
    if failed and not payload.get("alerted"):
        await in_thread(
            services,
            ref,
            deploy_blocks.watch_failed(
                env.name, deployment_id, reason, final=False, checks=checks, failures=failures
            ),
        )
        payload = {**payload, "alerted": True}
    until = datetime.fromisoformat(str(payload["until"]))
    now = services.store.clock()
    next_at = now + env.check_interval
    # A check that falls due within a second of the end still counts: it is the last one.
    if next_at > until + timedelta(seconds=1):
        watched = env.deploy.watch_duration(env.requires_approval)
        duration = human_duration(watched.total_seconds())
        if failures:
            final = deploy_blocks.watch_failed(
                env.name, deployment_id, reason, final=True, checks=checks, failures=failures
            )
        else:
            final = deploy_blocks.watch_passed(env.name, checks, duration, deployment.version)
        await in_thread(services, ref, final)
        return
    await services.scheduler.schedule(
        WATCH_TIMER,
        str(deployment_id),
        next_at,
        {**payload, "checks": checks, "failures": failures, "last_reason": reason},
    )


# --- crash recovery -----------------------------------------------------------------------


async def recover_interrupted(services: Services) -> int:
    """Deployments whose bot died: mark interrupted, say so in their thread, free their lock."""
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
        summary = _interrupted_summary(deployment)
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
        ref = message_ref(ended)
        if ref is not None:
            view = view_from_store(ended, steps)
            view.apply(Finished(Outcome("interrupted", summary, ended.version)))
            try:
                await services.chat.update(ref, view.message())
            except ChatError as exc:
                log.warning("deployment #%d message not updated: %s", ended.id, exc.error)
            await in_thread(services, ref, deploy_blocks.interrupted(ended))
        if ended.kind == "rollback":
            await page_interrupted_rollback(services, ended)
    return recovered


async def page_interrupted_rollback(services: Services, deployment: Deployment) -> None:
    """A rollback cut short by its bot stopping may have left a host stopped or half-way: that
    is a failed rollback, and a failed rollback opens an incident (which pages)."""
    env = services.config.environments.get(deployment.environment)
    step = deploy_blocks.STEP_TITLES.get(deployment.step, deployment.step)
    try:
        await services.incidents.open_incident(
            f"Rollback #{deployment.id} of {deployment.environment} was interrupted during "
            f"{step}: the bot stopped. Its hosts may be part-way; check them.",
            1 if env is not None and env.requires_approval else 2,
            source="rollback",
            link=deployment.permalink,
            opened_by=deployment.requested_by,
            channel=deployment.channel,
            dedupe_key=f"rollback:{deployment.id}",
        )
    except (StoreError, ValueError) as exc:
        log.error(
            "rollback #%d of %s was interrupted and no incident could be opened (%s): page "
            "someone by hand",
            deployment.id,
            deployment.environment,
            exc,
        )


def view_from_store(deployment: Deployment, steps: Sequence[DeploymentStep]) -> DeployView:
    """Rebuild a deployment's checklist from its recorded steps (after a restart)."""
    view = blank_view(deployment)
    apply_recorded(view, steps)
    return view


def blank_view(deployment: Deployment) -> DeployView:
    """A deployment's checklist with no step done yet: its title, who, its steps."""
    flags = [
        f"--{key.replace('_', '-')}"
        for key in ("dry_run", "skip_tests", "no_backup")
        if deployment.options.get(key)
    ]
    title = None
    if deployment.kind == "rollback":
        title = rollback_plan.recorded_title(
            deployment.environment, deployment.hosts, deployment.version
        )
    elif deployment.kind == "backup":
        title = rollback.backup_title(deployment.environment)
    return DeployView(
        kind=deployment.kind,
        environment=deployment.environment,
        version=deployment.version,
        requested_by=deployment.requested_by,
        approved_by=deployment.approved_by,
        flags=flags,
        deployment_id=deployment.id,
        started_at=deployment.started_at,
        steps=STEPS_BY_KIND.get(deployment.kind, STEPS),
        title=title,
    )


def apply_recorded(view: DeployView, steps: Sequence[DeploymentStep]) -> None:
    for step in steps:
        seconds = (step.finished_at - step.started_at).total_seconds() if step.finished_at else 0.0
        if step.state == "skipped":
            view.apply(StepSkipped(step.step, step.detail))
        elif step.state == "running":
            view.apply(StepStarted(step.step, step.host, step.detail))
        elif step.state == "ok":
            view.apply(StepDone(step.step, step.host, seconds, step.detail))
        elif step.state == "failed":
            view.apply(StepFailed(step.step, step.host, seconds, step.detail, step.output))


# --- locks by hand ------------------------------------------------------------------------


async def lock(
    services: Services, env: Environment, reason: str, user_id: str, conversation: Conversation
) -> str:
    taken = await asyncio.to_thread(
        services.store.acquire_manual_lock, env.name, user_id, reason, conversation.channel_id
    )
    if isinstance(taken, LockHeld):
        await tell(conversation, deploy_blocks.locked(env.name, taken.lock, "lock"))
        return f"refused: {env.name} is locked by {taken.lock.holder}"
    why = f": {deploy_blocks.escape(reason)}" if reason else ""
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
        await tell(conversation, blocks.notice(f"{env.name} is not locked."))
        return "not locked"
    if held.kind != "manual":
        await tell(
            conversation,
            blocks.notice(
                f"{env.name} is {deploy_blocks.lock_holder(held)}. A running deploy keeps its lock "
                "until it ends: use the Cancel button on its message to stop it.",
                ":no_entry:",
            ),
        )
        return "refused: a deployment holds it"
    if held.holder != user_id:
        await tell(conversation, deploy_blocks.unlock_confirm(env.name, held))
        return "asked to confirm"
    return await _free(services, env.name, held, user_id, conversation)


async def free_anyway(
    services: Services, value: str, user_id: str, conversation: Conversation
) -> str:
    """The confirmation button for freeing someone else's lock."""
    env_name, _, token = value.partition(":")
    held = await asyncio.to_thread(services.store.environment_lock, env_name)
    if held is None or held.token != token:
        await tell(
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
        await tell(conversation, blocks.notice(f"The lock on {env_name} changed since."))
        return "lock changed"
    await services.scheduler.cancel(LOCK_REMINDER_TIMER, env_name)
    if held.holder == user_id:
        text = f"<@{user_id}> freed {env_name}."
        await conversation.post(blocks.notice(text, ":unlock:"))
        return f"unlocked {env_name}"
    since = deploy_blocks.day_and_time(held.acquired_at)
    reason = f" ({deploy_blocks.escape(held.reason)})" if held.reason else ""
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
    since = deploy_blocks.day_and_time(held.acquired_at)
    reason = f" ({deploy_blocks.escape(held.reason)})" if held.reason else ""
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


# --- status and history -------------------------------------------------------------------


async def status(services: Services, env_name: str | None, conversation: Conversation) -> str:
    store = services.store
    running = await asyncio.to_thread(store.deployments, env_name, state=RUNNING, limit=50)
    locks = [
        lk
        for lk in await asyncio.to_thread(store.environment_locks)
        if env_name is None or lk.environment == env_name
    ]
    ci: tuple[str, list] | str | None = None  # type: ignore[type-arg]
    if services.config.ci is not None:
        try:
            ci = await CiClient(services.config.ci, services.http).recent_runs()
        except CiError as exc:
            ci = str(exc)
    message = deploy_blocks.deploy_status(
        scope=env_name or "all environments",
        running=running,
        locks=locks,
        ci=ci,
        workflow=services.config.ci.workflow if services.config.ci else None,
    )
    await tell(conversation, message)
    return message.text


async def history(services: Services, env_name: str, conversation: Conversation) -> str:
    deployments = await asyncio.to_thread(services.store.deployments, env_name, limit=10)
    message = deploy_blocks.deploy_history(env_name, deployments)
    await tell(conversation, message)
    return message.text
