"""The runbook's deployment ("Standard Deployment" and "Deployment Options"), as steps.

    lock → checklist (CI) → reach the hosts → version → build → test → package → backup →
    upload → install → restart and verify, one host at a time → smoke → record → unlock

`Deploy.run()` yields progress events (bot/runbook/changes/progress.py) and ends with
`Finished`. It knows nothing about Slack. The environment lock is taken by the caller before
it runs (bot/store/deployments.py begin_deployment) and released by the caller when it ends.

One loop runs the steps (deploy_steps.py), each in its phase:
- A cancel request stops a step on the bot's machine (a build) at once — every process running
  in the deploy's workspace is killed, whole process groups — and is honoured before the next
  step, never in the middle of the restarts:
  before a step on the bot's machine or on the hosts nothing the service runs has changed (a
  release unpacked and not switched to is removed again); before a live step the new release
  stays live.
- A failure before any host was switched changes nothing. From the switch on, with
  auto_rollback on, every changed host goes back to the release it ran before (or this
  deploy's backup when it had none), is restarted and verified, and the failed release is
  marked bad in the host's release log.
- `--dry-run` goes through the same steps and yields each one's StepPlanned with the exact
  commands, and runs nothing but the `version` command (which only prints the version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from bot.process import kill_point
from bot.runbook.changes import releases
from bot.runbook.changes.activate import Clocked, human_duration, one_line, show_version
from bot.runbook.changes.deploy_steps import STEPS, DeploySteps, HostPlan, Phase, Step
from bot.runbook.changes.procedure import (
    StepError,
    locked,
    mark_bad,
    remove_release,
    unlocked,
)
from bot.runbook.changes.progress import (
    Event,
    Finished,
    HostsChanged,
    Note,
    Outcome,
    StepDone,
    StepFailed,
    StepPlanned,
    StepStarted,
)
from bot.runbook.changes.releases import RemoteCommandFailed
from bot.runbook.changes.workspace import kill_processes_in
from bot.transport.base import Transport, TransportError

log = logging.getLogger(__name__)

CANCEL_POLL_S = 1.0  # how often a running build asks whether Cancel was pressed
ROLLBACK = ("rollback", "Roll back")  # the automatic rollback's line, added when it runs
TITLES = dict((*STEPS, ROLLBACK))


class Deploy(DeploySteps):
    """A deploy, or its dry run: `run()` yields its events and ends with Finished."""

    _stopped_by: str | None = None  # who pressed Cancel while a build step ran

    async def run(self) -> AsyncIterator[Event]:
        if self.request.options.dry_run:
            async for event in self._dry_run():
                yield event
            return
        yield locked(self.env.name, "deploy")
        kill_point("deploy:locked")
        try:
            async for event in self._run():
                yield event
        finally:
            # Whatever way it ended (a failure, Cancel, the bot stopping): its workspace, the
            # processes still running in it and its package go.
            await self.close_workspace()
            if self.package_dir is not None:
                shutil.rmtree(self.package_dir, ignore_errors=True)

    async def _run(self) -> AsyncIterator[Event]:
        async with contextlib.AsyncExitStack() as opened:
            hosts: list[Transport] | None = None  # opened for the first step that needs them
            for step in self.steps():
                if hosts is None and step.phase is not Phase.LOCAL:
                    hosts = await opened.enter_async_context(self.open_hosts(self.env))
                stopped = await self._stopped_before(step, hosts or [])
                if stopped is not None:
                    yield stopped
                    return
                watcher = self._watch_for_cancel(step)
                try:
                    async for event in step.run(hosts or []):
                        yield event
                except StepError as failure:
                    if self._stopped_by is not None:
                        yield self._stopped_during(step, failure.event)
                        return
                    if not failure.announced:
                        yield failure.event
                    async for event in self._after_failure(hosts or [], failure.event):
                        yield event
                    return
                finally:
                    if watcher is not None:
                        watcher.cancel()
            yield unlocked(self.env.name)
            count = len(hosts or [])
            summary = (
                f"Deployed {show_version(self.version)} to {self.env.name} ({count} "
                f"host{'s' if count != 1 else ''}) in {human_duration(self._seconds)}"
            )
            yield Finished(self._outcome("succeeded", summary))

    async def _dry_run(self) -> AsyncIterator[Event]:
        """The same steps, each saying what it would run; only the version command runs."""
        yield StepPlanned("lock", (), f"a real run locks {self.env.name}; a dry run takes no lock")
        for step in self.steps():
            yield await step.plan()
        yield StepPlanned("unlock", ())
        count = len(self._targets)
        summary = (
            f"Dry run of {show_version(self.version)} to {self.env.name} on {count} "
            f"host{'s' if count != 1 else ''}: nothing was built, copied or restarted."
        )
        yield Finished(Outcome("planned", summary, version=self.version, seconds=self._seconds))

    # --- how it ends -------------------------------------------------------------------------

    def _outcome(self, state: str, summary: str, failure: StepFailed | None = None) -> Outcome:
        return Outcome.of(
            state,
            summary,
            failure,
            version=self.version,
            seconds=self._seconds,
            hosts=self._hosts_dict(),
        )

    def _failed_untouched(self, failure: StepFailed) -> Outcome:
        where = f" on {failure.host}" if failure.host else ""
        what = show_version(self.version) if self.version else "the new version"
        summary = (
            f"Deploy of {what} to {self.env.name} failed at {TITLES[failure.step]}{where}: "
            f"{failure.error}. Nothing the service runs was changed."
        )
        unreachable = self.unreachable
        if failure.step == "hosts" and unreachable:
            total, name = len(self.hosts), self.env.name
            if total == 1:
                which = f"{name}'s host cannot be reached"
            elif len(unreachable) == total:
                which = f"none of {name}'s {total} hosts can be reached"
            else:
                which = f"{len(unreachable)} of {name}'s {total} hosts cannot be reached"
            summary = (
                f"Deploy of {what} to {name} did not start: {which} from this machine "
                f"({failure.error}). Nothing was changed."
            )
        return self._outcome("failed", summary, failure)

    def _watch_for_cancel(self, step: Step) -> asyncio.Task[None] | None:
        """While a step runs on the bot's machine (a build may take many minutes), Cancel
        stops it at once: every process running in the workspace is killed, whole groups."""
        if step.phase is not Phase.LOCAL or self.cancel_requested is None:
            return None
        return asyncio.create_task(self._kill_build_on_cancel())

    async def _kill_build_on_cancel(self) -> None:
        assert self.cancel_requested is not None
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            who = await self.cancel_requested()
            if who is not None and self.workspace is not None:
                self._stopped_by = who
                killed = await kill_processes_in(self.workspace.top)
                log.info(
                    "deploy of %s cancelled by %s: %d build process group(s) killed",
                    self.env.name,
                    who,
                    killed,
                )
                return

    def _stopped_during(self, step: Step, failure: StepFailed) -> Finished:
        summary = (
            f"Cancelled during {TITLES[step.key]}: its processes were stopped; nothing the "
            "service runs was changed."
        )
        outcome = replace(self._outcome("cancelled", summary), cancelled_by=self._stopped_by)
        return Finished(outcome)

    async def _stopped_before(self, step: Step, hosts: Sequence[Transport]) -> Finished | None:
        if self.cancel_requested is None:
            return None
        who = await self.cancel_requested()
        if who is None:
            return None
        if step.phase is Phase.LIVE:
            state = (
                f"{show_version(self.version)} is live on every host and verified healthy, "
                f"but {TITLES[step.key].lower()} did not run; /rollback {self.env.name} goes back"
            )
        else:
            await self._remove_unused_release(hosts)
            state = "nothing the service runs was changed"
        summary = f"Cancelled before {TITLES[step.key]}: {state}."
        return Finished(replace(self._outcome("cancelled", summary), cancelled_by=who))

    async def _remove_unused_release(self, hosts: Sequence[Transport]) -> None:
        """A release unpacked by a deploy that never switched to it is removed again."""
        if self.release_id is None:
            return
        for host in hosts:
            plan = self._plan_of(host)
            if (
                plan.installed
                and not plan.changed
                and await remove_release(host, self.layout, self.release_id)
            ):
                plan.installed = False

    # --- after a failure: the automatic rollback ---------------------------------------------

    async def _after_failure(
        self, hosts: list[Transport], failure: StepFailed
    ) -> AsyncIterator[Event]:
        changed = [h for h in hosts if self._plan_of(h).changed]
        what = show_version(self.version)
        why = _why(failure)
        if not changed:
            await self._remove_unused_release(hosts)
            yield Finished(self._failed_untouched(failure))
            return
        if not self.settings.auto_rollback:
            on = ", ".join(h.target for h in changed)
            summary = (
                f"Deploy of {what} to {self.env.name} failed: {why}. auto_rollback is off, so "
                f"{on} still run {what}: /rollback {self.env.name} or fix forward."
            )
            yield Finished(self._outcome("failed", summary, failure))
            return
        yield Note(f"Rolling back {self.env.name}: {what} {why}.")
        stuck: list[tuple[Transport, StepFailed]] = []
        for index, host in enumerate(changed):
            async for event in self._roll_back(host, last=index == len(changed) - 1):
                yield event
                if isinstance(event, StepFailed):
                    stuck.append((host, event))
        await self._mark_bad(hosts, f"{what} {why}")
        yield HostsChanged(self._hosts_dict())
        previous = {self._plan_of(h).previous_version for h in changed}
        back_to = (
            show_version(previous.pop())
            if len(previous) == 1 and None not in previous
            else ("the previous release")
        )
        if not stuck:
            yield unlocked(self.env.name)
            summary = f"Rolled back to {back_to}: {what} {why}."
            yield Finished(self._outcome("rolled_back", summary, failure))
            return
        broken = "; ".join(f"{h.target}: {f.error}" for h, f in stuck)
        summary = (
            f"Deploy of {what} to {self.env.name} failed ({why}) and the rollback failed too — "
            f"{broken}. Someone must look at {', '.join(h.target for h, _ in stuck)} now."
        )
        yield Finished(self._outcome("rollback_failed", summary, failure))

    async def _roll_back(self, host: Transport, *, last: bool) -> AsyncIterator[Event]:
        """One switched host back to what it ran; a StepFailed when it could not be."""
        plan = self._plan_of(host)
        clocked = Clocked()
        yield StepStarted("rollback", host.target)
        try:
            target, version = await self._rollback_target(host, plan)
        except (TransportError, RemoteCommandFailed) as exc:
            yield StepFailed("rollback", host.target, clocked.seconds, one_line(exc))
            return
        if target is None:
            yield StepFailed(
                "rollback",
                host.target,
                clocked.seconds,
                "nothing to roll back to: no earlier release on the host and no backup from "
                "this deploy",
            )
            return
        problem = await self.activator.activate(
            host,
            target,
            expect=version if last else None,
            accept=(version, self.version),
            step="rollback",
            clocked=clocked,
        )
        if problem is not None:
            yield problem
            return
        plan.changed = False
        yield StepDone(
            "rollback",
            host.target,
            clocked.seconds,
            f"back on {show_version(version) if version else target}, healthy",
        )

    async def _rollback_target(
        self, host: Transport, plan: HostPlan
    ) -> tuple[str | None, str | None]:
        """The release to go back to: the one that ran before, else this deploy's backup."""
        if plan.previous is not None:
            state, _ = await releases.inspect(host, self.layout)
            if state.release(plan.previous) is not None:
                return plan.previous, plan.previous_version
            log.warning("%s: %s is gone; restoring the backup", host.target, plan.previous)
        if plan.backup is None:
            return None, None
        release_id = await releases.restore(host, self.layout, plan.backup, self.clock())
        # The backup is of what ran before this deploy: the same version.
        return release_id, plan.previous_version

    async def _mark_bad(self, hosts: list[Transport], reason: str) -> None:
        if self.release_id is not None:
            installed = [h for h in hosts if self._plan_of(h).installed]
            await mark_bad(installed, self.layout, self.release_id, self.clock(), reason)


def _why(failure: StepFailed) -> str:
    if failure.step in ("restart", "rollback") and failure.error.startswith("failed its health"):
        return failure.error
    where = f" on {failure.host}" if failure.host else ""
    return f"failed at {TITLES[failure.step].lower()}{where} ({failure.error})"
