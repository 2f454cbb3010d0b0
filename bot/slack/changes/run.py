"""One run for every change (a deploy, a rollback, a backup): under the environment's lock,
recorded, shown in one message.

- `ChangeRun.begin` takes the lock and records the run (a deployments row), or tells the
  requester why not (the lock's holder; the database down) — the same words for every kind.
- `ChangeRun.execute` runs the procedure (bot/runbook/changes): its events update one checklist
  message in place (change_blocks.ChangeView) and are recorded step by step; a failing step's
  output goes in the message's thread; a heartbeat says the run is alive. At the end the row
  is finished, which frees the lock. A procedure that honours Cancel (a deploy; the
  procedure says so, and where) gets the button, and asks `cancel_requested` between steps.
- A bot stopping mid-run marks the run interrupted, says so, and frees the lock (a rollback
  cut short also pages: rollback_incident.py); a run whose bot died is recovery.py's.
- Lines a kind adds after its run (a rollback's incident, summary, follow-up) are recorded
  with `record_line` and shown below the outcome by `show_as_recorded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from bot.config import Environment
from bot.process import THIS_PROCESS
from bot.runbook.changes.kinds import step_title
from bot.runbook.changes.procedure import HonoursCancel, OpenHosts, Procedure
from bot.runbook.changes.progress import Finished, Outcome, StepFailed, StepRecorder
from bot.runbook.changes.rollback import AFTER_RUN
from bot.slack import blocks
from bot.slack.changes import change_blocks, lock_blocks
from bot.slack.changes.change_blocks import ChangeView
from bot.slack.changes.rollback_incident import page_interrupted_rollback
from bot.slack.chat import ChatError, Conversation, Message, MessageRef
from bot.slack.live_message import LiveMessage
from bot.slack.services import Services
from bot.store import RUNNING, AlreadyStarted, Deployment, LockHeld, StoreError
from bot.transport import open_transports
from bot.transport.base import Transport
from bot.transport.local import LocalTransport

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = timedelta(seconds=10)
# How `ChangeRun.begin`'s answer ends when the approved request had already started.
ALREADY_STARTED = "already started"
# Failures told in the thread one by one; past this (a hundred hosts down) the checklist says it.
MAX_THREAD_FAILURES = 10

# The runs of this process between `begin` and their recorded end, by deployment id: a run of
# this process that is not here has no task any more, and the recovery sweep ends it. An end
# the store did not take is kept for the sweep to record.
_RUNNING: set[int] = set()
_UNRECORDED: dict[int, Outcome] = {}
# Runs being begun: recorded, perhaps, but not yet in _RUNNING.
_beginning = 0


def running_here(deployment_id: int) -> bool:
    """Whether a task of this process is running that change now (or may be: one is being
    begun, and its id is not known yet)."""
    return deployment_id in _RUNNING or _beginning > 0


def unrecorded_end(deployment_id: int) -> Outcome | None:
    """How a run of this process ended, when the store did not take it; taken once."""
    return _UNRECORDED.pop(deployment_id, None)


def keep_unrecorded_end(deployment_id: int, outcome: Outcome) -> None:
    _UNRECORDED[deployment_id] = outcome


@contextlib.asynccontextmanager
async def running_it(services: Services, deployment_id: int) -> AsyncIterator[None]:
    """This process runs that change for a while (the recovery putting a dead run's hosts
    right): the sweep leaves it alone, its heartbeat tells other replicas it lives."""
    _RUNNING.add(deployment_id)
    beating = asyncio.create_task(_heartbeat(services, deployment_id))
    try:
        yield
    finally:
        beating.cancel()
        _RUNNING.discard(deployment_id)


# --- the wiring the procedures need, and where a change talks -------------------------------


def hosts_opener(services: Services) -> OpenHosts:
    ssh = services.config.ssh
    return lambda env: open_transports(env, ssh)


def local_transport(services: Services, env: Environment) -> Transport:
    timeout_s = services.config.ssh.command_timeout.total_seconds()
    return LocalTransport(command_timeout_s=timeout_s, environment=env.deploy.env)


async def answer(conversation: Conversation, message: Message) -> None:
    """Answer the person who asked, privately (their response_url), or in the channel."""
    if conversation.response_url:
        try:
            await conversation.chat.respond(conversation.response_url, message)
            return
        except ChatError as exc:
            log.warning("private answer not delivered (%s); posting in the channel", exc.error)
    await conversation.chat.post(conversation.channel_id, message)


async def post_in_thread(services: Services, ref: MessageRef | None, message: Message) -> None:
    """A line in the thread of ref's message; a reply Slack refuses is logged, not raised."""
    if ref is None:
        return
    try:
        await services.chat.post(ref.channel, message, thread_ts=ref.ts)
    except ChatError as exc:
        log.warning("thread reply under %s not posted: %s", ref, exc.error)


def where_shown(deployment: Deployment | None) -> MessageRef | None:
    """Where a change's checklist message is, once it was posted."""
    if deployment is None or not deployment.channel or not deployment.message_ts:
        return None
    return MessageRef(deployment.channel, deployment.message_ts)


# --- one change under its lock --------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change about to run, as its record and its message name it."""

    kind: str  # deploy | rollback | backup
    environment: Environment
    requested_by: str
    version: str | None = None
    approved_by: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)  # a deploy's DeployOptions
    flags: tuple[str, ...] = ()
    title: str | None = None  # None: the view's own (a deploy's names its version)
    approval_id: int | None = None  # the approved request it runs: its run key, taken once


class ChangeRun:
    """One change: locked and recorded (`begin`), then run and shown (`execute`)."""

    def __init__(self, services: Services, change: Change, conversation: Conversation) -> None:
        self.services = services
        self.change = change
        self.conversation = conversation
        self.deployment: Deployment | None = None

    @property
    def _recorded(self) -> Deployment:
        assert self.deployment is not None, "begin() first"
        return self.deployment

    async def begin(self) -> str | None:
        """Lock the environment and record the run: None when it may start, else why not (the
        requester has been told), for the audit."""
        change, store = self.change, self.services.store
        env = change.environment.name
        global _beginning
        began: Deployment | LockHeld | AlreadyStarted | None = None
        _beginning += 1
        try:
            began = await asyncio.to_thread(
                store.begin_deployment,
                kind=change.kind,
                environment=env,
                requested_by=change.requested_by,
                version=change.version,
                options=dict(change.options),
                owner=THIS_PROCESS,
                approved_by=change.approved_by,
                channel=self.conversation.channel_id,
                approval_id=change.approval_id,
            )
        except StoreError as exc:
            log.error("%s of %s not started: the store failed (%s)", change.kind, env, exc)
            text = (
                f"The {change.kind} of {env} did not start: the bot's database is unavailable, "
                "so the environment cannot be locked. Nothing ran."
            )
            await answer(self.conversation, blocks.notice(text, ":x:"))
            return "not started: store unavailable"
        finally:
            _beginning -= 1
            if isinstance(began, Deployment):
                _RUNNING.add(began.id)
        if isinstance(began, AlreadyStarted):
            # A second start of one approved request (the start-up sweep and the press racing):
            # the first one runs it; this one says nothing.
            log.info("%s of %s: request #%d already started", change.kind, env, began.approval_id)
            return f"request #{began.approval_id} {ALREADY_STARTED}"
        if isinstance(began, LockHeld):
            if change.approval_id is not None:
                # Refused is handled: the request is not started again later.
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(store.mark_approval_started, change.approval_id)
            await answer(self.conversation, lock_blocks.locked(env, began.lock, change.kind))
            return f"refused: {env} is locked by {began.lock.holder}"
        self.deployment = began
        return None

    async def cancel_requested(self) -> str | None:
        """Who pressed Cancel, if anyone did (None also when the store cannot say)."""
        try:
            current = await asyncio.to_thread(self.services.store.deployment, self._recorded.id)
        except StoreError:
            return None
        return current.cancel_requested_by if current else None

    def _view(self) -> ChangeView:
        change, deployment = self.change, self._recorded
        return ChangeView(
            kind=change.kind,
            environment=change.environment.name,
            version=change.version,
            requested_by=change.requested_by,
            approved_by=change.approved_by,
            flags=change.flags,
            deployment_id=deployment.id,
            started_at=deployment.started_at,
            title=change.title,
        )

    async def execute(
        self, procedure: Procedure, first: Callable[[], Awaitable[None]] | None = None
    ) -> Outcome:
        """Run the procedure into the message and the store; its outcome. One that honours
        Cancel gets the button, and asks the store whether it was pressed. `first` is what
        the kind does under the lock before its procedure (a rollback stops the checks of the
        deploy it undoes).

        Everything after `begin` took the lock is inside one try/finally: whatever fails (the
        first post, a step, the store at the end), the run's end is recorded — which frees
        the lock — or, when the store refuses even that, left to the recovery sweep, which
        finds this run's task gone (`running_here`) and records it."""
        deployment, view = self._recorded, self._view()
        cancellable = isinstance(procedure, HonoursCancel)
        if isinstance(procedure, HonoursCancel):
            procedure.cancel_requested = self.cancel_requested
        live = LiveMessage(self.conversation)
        heartbeat = asyncio.create_task(_heartbeat(self.services, deployment.id))
        outcome: Outcome | None = None
        stopping = False
        try:
            if first is not None:
                await first()
            outcome = await self._run(procedure, view, live, cancellable)
        except asyncio.CancelledError:
            # The bot is stopping: say so now and free the lock, rather than leave it to the
            # next start-up's recovery.
            stopping = True
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._interrupted(view, live))
            raise
        except ChatError as exc:
            log.error(
                "%s #%d of %s: its message could not be posted (%s); stopped before any step",
                deployment.kind,
                deployment.id,
                deployment.environment,
                exc.error,
            )
            outcome = Outcome(
                "failed",
                f"{deployment.kind.capitalize()} #{deployment.id} did not run: its message "
                f"could not be posted (Slack said {exc.error}). Nothing was changed.",
                view.version,
            )
            view.apply(Finished(outcome))
        except Exception:
            log.exception(
                "%s #%d of %s failed with an internal error",
                deployment.kind,
                deployment.id,
                deployment.environment,
            )
            outcome = Outcome(
                "failed",
                f"{deployment.kind.capitalize()} #{deployment.id} stopped on an internal "
                "error (the bot's log has the details). Check the hosts with /health and "
                "/deploy status before trying again.",
                view.version,
            )
            view.apply(Finished(outcome))
        finally:
            heartbeat.cancel()
            if outcome is None and not stopping:
                outcome = Outcome("failed", "the procedure ended without a result", view.version)
                view.apply(Finished(outcome))
            if outcome is not None:
                await self._finish(outcome)
        assert outcome is not None
        try:
            await live.finish(view.message())
        except ChatError as exc:
            log.warning(
                "%s #%d: final state not shown: %s", deployment.kind, deployment.id, exc.error
            )
        return outcome

    async def _run(
        self, procedure: Procedure, view: ChangeView, live: LiveMessage, cancellable: bool
    ) -> Outcome | None:
        """The procedure's events into the message and the store; its outcome, if it said."""
        await live.show(view.message(cancellable=cancellable))
        await self._record_message(live.ref)
        recorder = StepRecorder(self.services.store, self._recorded.id)
        outcome: Outcome | None = None
        async for event in procedure.run():
            view.apply(event)
            await recorder.record(event)
            if isinstance(event, StepFailed) and len(view.failures) <= MAX_THREAD_FAILURES:
                await post_in_thread(self.services, live.ref, change_blocks.failure_detail(event))
            if isinstance(event, Finished):
                outcome = event.outcome
            await live.show(view.message(cancellable=cancellable))
        return outcome

    async def recorded(self) -> Deployment | None:
        """The run's record as the store has it now (its message, how it ended); None when
        the store cannot say (logged)."""
        deployment = self._recorded
        try:
            return await asyncio.to_thread(self.services.store.deployment, deployment.id)
        except StoreError as exc:
            log.error("%s #%d: not read back: %s", deployment.kind, deployment.id, exc)
            return None

    async def _record_message(self, ref: MessageRef | None) -> None:
        if ref is None:
            return
        deployment = self._recorded
        permalink = await self.services.chat.permalink(ref)
        try:
            await asyncio.to_thread(
                self.services.store.set_deployment_message,
                deployment.id,
                ref.channel,
                ref.ts,
                permalink,
            )
        except StoreError as exc:
            log.error("deployment #%d: message not recorded: %s", deployment.id, exc)

    async def _finish(self, outcome: Outcome) -> None:
        """Record the run's end, which frees its lock. Never raises: an end the store does not
        take is kept for the recovery sweep (`unrecorded_end`), which records it once the
        store answers again — this task is gone by then, and the sweep looks for just that."""
        deployment = self._recorded
        state = "succeeded" if outcome.state == "planned" else outcome.state
        try:
            await asyncio.to_thread(
                self.services.store.finish_deployment, deployment.id, state, outcome.summary
            )
        except Exception as exc:  # the lock must not outlive the run
            _UNRECORDED[deployment.id] = Outcome(state, outcome.summary, outcome.version)
            log.error(
                "deployment #%d not finished in the store (%s): the recovery sweep records "
                "its end and frees %s once the database answers",
                deployment.id,
                exc,
                deployment.environment,
            )
        finally:
            _RUNNING.discard(deployment.id)

    async def _interrupted(self, view: ChangeView, live: LiveMessage) -> None:
        _RUNNING.discard(self._recorded.id)
        summary = "interrupted: the bot was stopped while this ran"
        ended = await asyncio.to_thread(
            self.services.store.interrupt_deployment, self._recorded.id, summary
        )
        if ended is not None:
            view.apply(Finished(Outcome("interrupted", interrupted_summary(ended))))
            await live.finish(view.message())
            await tell_interrupted(self.services, ended, live.ref)


async def _heartbeat(services: Services, deployment_id: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
        try:
            await asyncio.to_thread(
                services.store.update_deployment, deployment_id, heartbeat_at=services.store.clock()
            )
        except StoreError as exc:
            log.error("deployment #%d: heartbeat not recorded: %s", deployment_id, exc)


# --- interruption ---------------------------------------------------------------------------


def interrupted_summary(deployment: Deployment) -> str:
    return (
        f"{deployment.kind.capitalize()} #{deployment.id} was interrupted during "
        f"{step_title(deployment.step)}: the bot stopped. "
        f"{deployment.environment} is unlocked; check its hosts."
    )


async def tell_interrupted(services: Services, ended: Deployment, ref: MessageRef | None) -> None:
    """A change its bot stopped in the middle: a line in its thread; a rollback also pages (it
    may have left a host stopped or half-way)."""
    await post_in_thread(services, ref, change_blocks.interrupted(ended))
    if ended.kind == "rollback":
        await page_interrupted_rollback(services, ended)


# --- Cancel ---------------------------------------------------------------------------------


async def cancel(services: Services, deployment_id: int, user_id: str) -> str:
    """The message's Cancel button: the requester or an approver. The answer to the presser."""
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


# --- lines done after the run ---------------------------------------------------------------


async def record_line(
    services: Services, deployment_id: int, step: str, state: str, detail: str
) -> int | None:
    """A line of the checklist done after the run (it shows below the outcome); its id while
    it runs, to finish it later with `finish_line`."""
    store = services.store
    try:
        step_id = await asyncio.to_thread(store.record_step, deployment_id, step, "", state, detail)
        if state != "running":
            await asyncio.to_thread(store.finish_step, step_id, state, detail)
    except StoreError as exc:
        log.error("deployment #%d: step %s not recorded: %s", deployment_id, step, exc)
        return None
    return int(step_id)


async def finish_line(services: Services, step_id: int, state: str, detail: str) -> None:
    try:
        await asyncio.to_thread(services.store.finish_step, step_id, state, detail)
    except StoreError as exc:
        log.error("checklist line #%d not finished: %s", step_id, exc)


async def show_as_recorded(services: Services, deployment_id: int) -> None:
    """Show the checklist as the store has it: the run's steps, its outcome, then the lines
    done after it."""
    store = services.store
    try:
        deployment = await asyncio.to_thread(store.deployment, deployment_id)
        steps = await asyncio.to_thread(store.deployment_steps, deployment_id)
    except StoreError as exc:
        log.error("deployment #%d: checklist not refreshed: %s", deployment_id, exc)
        return
    ref = where_shown(deployment)
    if deployment is None or ref is None:
        return
    view = ChangeView.of_record(deployment)
    view.apply_recorded([s for s in steps if s.step not in AFTER_RUN])
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
    view.apply_recorded([s for s in steps if s.step in AFTER_RUN])
    try:
        await services.chat.update(ref, view.message())
    except ChatError as exc:
        log.warning("deployment #%d: checklist not updated: %s", deployment_id, exc.error)
