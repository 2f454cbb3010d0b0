"""The runbook's Rollback Procedures (Quick Rollback, Rollback Checklist); Manual Backups are
backup.py's.

    plan (rollback_plan.py) → [approval] → lock → Rollback.run():
      lock → reach the hosts (does the plan still hold?) → restore the backup (every host,
      up to 5 at once) → check the files → one host at a time: stop → switch → start →
      health checks → unlock

Where this departs from the runbook's Quick Rollback, and why:
- The runbook stops the service and untars a backup over the install. Here the archive is
  unpacked into a new release folder and checked (MANIFEST, the config's artifacts in bin/)
  while the service still runs; only then is each host stopped, switched and started. A
  corrupt or incomplete archive is found before anything stops, the downtime is a switch and a
  start, and the release left stays on disk: the rollback itself can be undone by naming it.
- A target that fails its health check (or whose start fails) is marked bad in the release
  log (a restored release carries the archive's name, so the archive counts as bad too): no
  later rollback lands on it. The release rolled back from is marked `rolled_back`: the next
  `/rollback` goes further back, not back to it.
- A failure stops the rollback at that host: nothing more is changed, and the outcome says
  which host runs which version. Opening an incident for it is the Slack side's (it pages).

Every remote command is an argv list or a constant script (releases.py).
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.process import kill_point
from bot.runbook.changes import leftovers, releases
from bot.runbook.changes.activate import (
    PASSES_NEEDED,
    Activator,
    Clocked,
    human_duration,
    one_line,
    short,
    show_version,
)
from bot.runbook.changes.procedure import (
    OpenHosts,
    StepError,
    each_host,
    locked,
    mark_bad,
    remove_release,
    unlocked,
    write_log,
)
from bot.runbook.changes.progress import (
    Event,
    Finished,
    HostsChanged,
    Outcome,
    StepDone,
    StepFailed,
    StepSkipped,
    StepStarted,
    VersionKnown,
)
from bot.runbook.changes.releases import Layout, RemoteCommandFailed
from bot.runbook.changes.rollback_plan import Move, RollbackPlan, hosts_text, look, still_holds
from bot.runbook.health.probe import Prober
from bot.transport.base import Shell, Transport, TransportError

log = logging.getLogger(__name__)

# The Rollback Checklist, as the message shows it. The last three are done by the Slack side
# once the run is over (they post and page); they show after the outcome.
STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("hosts", "Reach the hosts"),
    ("restore", "Restore the backup"),
    ("files", "Check the files"),
    ("stop", "Stop the service"),
    ("switch", "Switch current"),
    ("start", "Start the service"),
    ("verify", "Health checks"),
    ("unlock", "Unlock"),
    ("followup", "Follow-up checks"),
    ("notify", "Summary in the alerts channel"),
    ("incident", "Incident record"),
)
AFTER_RUN = ("followup", "notify", "incident")
TITLES = dict(STEPS)


HostFate = Literal[
    "untouched", "stop_failed", "switch_failed", "start_failed", "unhealthy", "rolled_back"
]


def steps_to_run(plan: RollbackPlan) -> list[str]:
    """What an approver approves: the titles of the steps this rollback will run."""
    return [
        title
        for key, title in STEPS
        if key not in ("lock", "unlock") and not (key == "restore" and plan.kind == "release")
    ]


def artifact_names(env: Environment) -> list[str]:
    """What bin/ must hold: the base names of the config's artifact globs."""
    return [posixpath.basename(a.rstrip("/")) for a in env.deploy.artifacts]


def missing_artifacts(patterns: Iterable[str], files: dict[str, bool]) -> list[str]:
    """Problems with bin/: an artifact pattern nothing matches. What the deploy asked of the
    artifacts, no more: it packages whatever the globs match, executable or not (a VERSION or
    a config file shipped in bin/), so a rollback to what it installed must not refuse it."""
    return [
        f"no {pattern}"
        for pattern in patterns
        if not any(fnmatch.fnmatchcase(name, pattern) for name in files)
    ]


# --- the run ------------------------------------------------------------------------------


@dataclass
class HostRun:
    move: Move
    release: str | None = None  # the release it switches to (a restored one once unpacked)
    version: str | None = None
    current: str | None = None  # what it ran (the adopted release, when adopted now)
    restored: str | None = None  # a release unpacked by this rollback
    fate: HostFate = "untouched"


class Rollback:
    def __init__(
        self,
        plan: RollbackPlan,
        env: Environment,
        config: Config,
        *,
        prober: Prober,
        open_hosts: OpenHosts,
        requested_by: str,
        clock: Clock = utc_now,
    ) -> None:
        self.plan = plan
        self.env = env
        self.settings = env.deploy
        self.layout = Layout.of(env)
        self.open_hosts = open_hosts
        self.requested_by = requested_by
        self.clock = clock
        self.activator = Activator(env, config, prober, clock=clock)
        self.runs = {m.host: HostRun(m, m.release, m.version, m.current) for m in plan.moves}
        self.clocked = Clocked()

    # --- the procedure ---------------------------------------------------------------------

    async def run(self) -> AsyncIterator[Event]:
        yield locked(self.env.name, "rollback")
        yield HostsChanged(self.hosts())
        async with self.open_hosts(self.env) as hosts:
            async for event in self._run(hosts):
                yield event

    async def _run(self, every_host: list[Transport]) -> AsyncIterator[Event]:
        by_target = {h.target: h for h in every_host}
        gone = [m.host for m in self.plan.moves if m.host not in by_target]
        if gone:
            failure = StepFailed(
                "hosts",
                gone[0],
                0.0,
                f"{hosts_text(gone)} is no longer one of {self.env.name}'s hosts in the config: "
                "ask again",
            )
            yield failure
            yield unlocked(self.env.name)
            yield Finished(self._untouched(failure))
            return
        hosts = [by_target[m.host] for m in self.plan.moves]
        prepare = [
            ("hosts", hosts, self._check_plan),
            ("restore", [h for h in hosts if self._needs_restore(h)], self._restore),
            ("files", hosts, self._check_files),
        ]
        for step, on, work in prepare:
            if not on:
                yield StepSkipped(
                    step,
                    f"{self.plan.target_line()} is kept on the hosts: nothing to restore, "
                    "the switch is instant",
                )
                continue
            try:
                async for event in each_host(step, on, work):
                    yield event
            except StepError as failure:
                await self._remove_restored(hosts)
                yield unlocked(self.env.name)
                yield Finished(self._untouched(failure.event))
                return
        for index, host in enumerate(hosts):
            failure: StepFailed | None = None
            async for event in self._switch_one(host, last=index == len(hosts) - 1):
                yield event
                if isinstance(event, StepFailed):
                    failure = event
            if failure is not None:
                await self._mark_bad(every_host, host, failure)
                await self._remove_restored(hosts)
                yield HostsChanged(self.hosts())
                yield unlocked(self.env.name)
                yield Finished(self._failed(failure))
                return
        await self._prune(hosts)
        versions = {r.version for r in self.runs.values()}
        if len(versions) == 1 and None not in versions:
            yield VersionKnown(str(versions.pop()))
        yield HostsChanged(self.hosts())
        yield unlocked(self.env.name)
        yield Finished(self._succeeded())

    def _needs_restore(self, host: Transport) -> bool:
        move = self.runs[host.target].move
        return move.backup is not None or move.adopt

    # --- preparing: nothing the service runs changes ---------------------------------------

    async def _check_plan(self, host: Transport) -> str:
        run = self.runs[host.target]
        tidied = await leftovers.tidy(host, self.layout)  # what a run cut short left
        view = await look(host, self.layout)
        if view.error is not None:
            raise StepError(StepFailed("hosts", host.target, 0.0, view.error))
        problem = still_holds(run.move, view)
        if problem is not None:
            raise StepError(StepFailed("hosts", host.target, 0.0, problem))
        move = run.move
        now = (
            show_version(move.current_version)
            if move.current_version
            else (move.current or "a hand-made bin/")
        )
        done = f" (left by a run cut short: {'; '.join(tidied)})" if tidied else ""
        return f"runs {now} → back to {self._target_of(run)}{done}"

    def _target_of(self, run: HostRun) -> str:
        move = run.move
        version = f" ({show_version(run.version)})" if run.version else ""
        if move.release is not None:
            return f"release {move.release}{version}"
        return f"backup {move.backup}{version}"

    async def _restore(self, host: Transport) -> str:
        run = self.runs[host.target]
        notes = []
        if run.move.adopt:
            run.current = await releases.adopt(host, self.layout, self.clock())
            notes.append(f"the hand-made bin/ became release {run.current}")
        if run.move.backup is not None:
            release_id, version = await releases.restore_release(
                host, self.layout, run.move.backup, self.clock()
            )
            run.release = run.restored = release_id
            run.version = version or run.version
            what = f" ({show_version(run.version)})" if run.version else ""
            notes.append(f"{run.move.backup} unpacked into releases/{release_id}{what}")
        return "; ".join(notes)

    async def _check_files(self, host: Transport) -> str:
        run = self.runs[host.target]
        assert run.release is not None
        clocked = Clocked()
        (result,) = await releases.run_checked(host, [self.layout.check_files_command(run.release)])
        files = releases.parse_bin_listing(result.stdout)
        patterns = artifact_names(self.env)
        problems = missing_artifacts(patterns, files)
        if problems:
            held = ", ".join(sorted(files)[:10]) or "nothing"
            raise StepError(
                StepFailed(
                    "files",
                    host.target,
                    clocked.seconds,
                    f"releases/{run.release}/bin is not what the config's artifacts expect: "
                    f"{'; '.join(problems)} (it holds: {held})",
                )
            )
        found = sorted(n for n in files if any(fnmatch.fnmatchcase(n, p) for p in patterns))
        manifest = (
            "every file matches its MANIFEST"
            if "manifest checked" in result.stdout.splitlines()
            else "no MANIFEST to check against"
        )
        mode = "executable" if all(files[n] for n in found) else "present, as the deploy left it"
        return f"bin/{', bin/'.join(found)} {mode}; {manifest}"

    # --- one host at a time: stop, switch, start, verify -----------------------------------

    async def _switch_one(self, host: Transport, *, last: bool) -> AsyncIterator[Event]:
        run = self.runs[host.target]
        assert run.release is not None
        target = host.target
        clocked = Clocked()
        yield StepStarted("stop", target, f"`{short(self.settings.stop)}`")
        problem = await self._command(host, self.settings.stop, "stop", clocked)
        if problem is not None:
            run.fate = "stop_failed"
            yield problem
            return
        kill_point("rollback:stopped")
        yield StepDone("stop", target, clocked.seconds, f"`{short(self.settings.stop)}` done")
        clocked = Clocked()
        yield StepStarted("switch", target, f"current → releases/{run.release}")
        try:
            await releases.switch(host, self.layout, run.release, self.clock())
        except (TransportError, RemoteCommandFailed) as exc:
            run.fate = "switch_failed"
            # What ran before is still current (the switch is one rename): start it again.
            again = await self._command(host, self.settings.start, "switch", Clocked())
            after = (
                "; its release was started again"
                if again is None
                else f"; starting its release again failed too: {again.error}"
            )
            output = (
                self.activator.output(exc.result) if isinstance(exc, RemoteCommandFailed) else ""
            )
            yield StepFailed("switch", target, clocked.seconds, one_line(exc) + after, output)
            return
        yield StepDone("switch", target, clocked.seconds, f"current → releases/{run.release}")
        clocked = Clocked()
        yield StepStarted("start", target, f"`{short(self.settings.start)}`")
        kill_point("rollback:start")
        problem = await self._command(host, self.settings.start, "start", clocked)
        if problem is not None:
            run.fate = "start_failed"
            yield problem
            return
        yield StepDone("start", target, clocked.seconds, f"`{short(self.settings.start)}` done")
        clocked = Clocked()
        timeout = human_duration(self.settings.verify_timeout.total_seconds())
        yield StepStarted("verify", target, f"{PASSES_NEEDED} passes in a row within {timeout}")
        verdict = await self.activator.verify(
            expect=run.version if last else None,
            accept=(run.version, run.move.current_version),
        )
        if not verdict.ok:
            run.fate = "unhealthy"
            yield StepFailed(
                "verify",
                target,
                clocked.seconds,
                f"failed its health check on host {target}: {verdict.reason} (no "
                f"{PASSES_NEEDED} passes in a row within verify_timeout {timeout})",
            )
            return
        run.version = run.version or verdict.version
        run.fate = "rolled_back"
        on = f" on {show_version(run.version)}" if run.version else ""
        yield StepDone(
            "verify", target, clocked.seconds, f"healthy{on}, {PASSES_NEEDED} checks in a row"
        )
        await self._record_verdicts(host, run)

    async def _command(
        self, host: Transport, text: str, step: str, clocked: Clocked
    ) -> StepFailed | None:
        """Run an operator's command (stop, start) on the host; a StepFailed if it failed."""
        try:
            result = await host.run(Shell(text))
        except TransportError as exc:
            return StepFailed(step, host.target, clocked.seconds, one_line(exc))
        if result.ok:
            return None
        return StepFailed(
            step,
            host.target,
            clocked.seconds,
            f"`{short(text)}` exited with status {result.exit_status}",
            self.activator.output(result),
        )

    # --- the release log ---------------------------------------------------------------------

    async def _record_verdicts(self, host: Transport, run: HostRun) -> None:
        assert run.release is not None
        await write_log(host, self.layout, releases.log_event("good", run.release, self.clock()))
        if run.current is None:
            return
        if self.plan.verdict == "bad":
            reason = (
                f"rolled back by {self.requested_by} after deploy #{self.plan.undoing}'s "
                "health watch saw it fail"
            )
        else:
            reason = f"rolled back by {self.requested_by} to {self._target_of(run)}"
        event = releases.log_event(self.plan.verdict, run.current, self.clock(), reason=reason)
        await write_log(host, self.layout, event)

    async def _mark_bad(
        self, every_host: Sequence[Transport], failed_on: Transport, failure: StepFailed
    ) -> None:
        """A target that did not come back healthy is bad: here, and wherever it is the same
        release (a kept release has one id on every host; a restored one is this host's)."""
        run = self.runs[failed_on.target]
        if run.fate not in ("start_failed", "unhealthy") or run.release is None:
            return
        having = [failed_on]
        if run.restored is None:
            having = [h for h in every_host if await self._has(h, run.release)]
        reason = f"failed after a rollback by {self.requested_by}: {failure.error}"
        await mark_bad(having, self.layout, run.release, self.clock(), reason)

    async def _has(self, host: Transport, release_id: str) -> bool:
        try:
            state, _ = await releases.inspect(host, self.layout)
        except (TransportError, RemoteCommandFailed):
            return False
        return state.release(release_id) is not None

    async def _remove_restored(self, hosts: Sequence[Transport]) -> None:
        """Releases unpacked for hosts this rollback never switched go again."""
        for host in hosts:
            run = self.runs[host.target]
            if (
                run.restored is not None
                and run.fate in ("untouched", "stop_failed")
                and await remove_release(host, self.layout, run.restored)
            ):
                run.restored = None

    async def _prune(self, hosts: Sequence[Transport]) -> None:
        """Keep keep_releases per host; the release left is kept, so this can be undone."""
        for host in hosts:
            run = self.runs[host.target]
            protect = [run.current] if run.current and self.plan.verdict != "bad" else []
            try:
                await releases.prune(host, self.layout, protect=protect)
            except (TransportError, RemoteCommandFailed) as exc:
                log.warning("old releases not pruned on %s: %s", host.target, exc)

    # --- the outcome ---------------------------------------------------------------------------

    def hosts(self) -> dict[str, dict[str, object]]:
        recorded: dict[str, dict[str, object]] = {}
        for target, run in self.runs.items():
            recorded[target] = {
                "from": run.current,
                "from_version": run.move.current_version,
                "to": run.release or run.move.target,
                "version": run.version,
                "backup": run.move.backup,
                "state": run.fate,
            }
        for target in self.plan.staying:
            recorded[target] = {
                "to": self.plan.target,
                "version": self.plan.version,
                "state": "already",
            }
        return recorded

    def _to_text(self) -> str:
        versions = {r.version for r in self.runs.values()}
        if len(versions) == 1 and None not in versions:
            return show_version(versions.pop())
        return self.plan.to_text

    def _outcome(self, state: str, summary: str, failure: StepFailed | None = None) -> Outcome:
        versions = {r.version for r in self.runs.values()}
        return Outcome.of(
            state,
            summary,
            failure,
            version=versions.pop() if len(versions) == 1 else None,
            seconds=self.clocked.seconds,
            hosts=self.hosts(),
        )

    def _succeeded(self) -> Outcome:
        summary = f"Rolled back {self.env.name} from {self.plan.from_text} to {self._to_text()}"
        if self.plan.kind == "backup":
            summary += f" (restored from {self.plan.target})"
        if self.plan.staying:
            summary += f"; {hosts_text(list(self.plan.staying))} already ran it"
        return self._outcome("succeeded", summary + ".")

    def _untouched(self, failure: StepFailed) -> Outcome:
        where = f" on {failure.host}" if failure.host else ""
        summary = (
            f"Rollback of {self.env.name} to {self.plan.to_text} failed at "
            f"{TITLES[failure.step]}{where}: {failure.error}. Nothing the service runs was "
            "changed."
        )
        return self._outcome("failed", summary, failure)

    def _failed(self, failure: StepFailed) -> Outcome:
        summary = (
            f"Rollback of {self.env.name} to {self._to_text()} failed at "
            f"{TITLES[failure.step]} on {failure.host}: {failure.error}. It stopped there. "
            f"Now: {self.where()}."
        )
        return self._outcome("rollback_failed", summary, failure)

    def where(self) -> str:
        """Which hosts run which version now, host groups by what happened to them."""
        groups: dict[HostFate | Literal["already"], list[str]] = {}
        words: dict[HostFate | Literal["already"], tuple[str, str]] = {}
        for target, run in self.runs.items():
            before = (
                show_version(run.move.current_version)
                if run.move.current_version
                else (run.current or "what it ran")
            )
            after = show_version(run.version) if run.version else f"release {run.release}"
            words[run.fate] = {
                "rolled_back": (f"runs {after}", "rolled back and healthy"),
                "unhealthy": (f"runs {after}", "which failed its health check (marked bad)"),
                "start_failed": (f"is switched to {after}", "whose start failed (marked bad)"),
                "stop_failed": (f"still runs {before}", "its stop command failed"),
                "switch_failed": (f"still runs {before}", "the switch failed"),
                "untouched": (f"still runs {before}", "not reached"),
            }[run.fate]
            groups.setdefault(run.fate, []).append(target)
        if self.plan.staying:
            words["already"] = (f"already ran {self.plan.to_text}", "")
            groups["already"] = list(self.plan.staying)
        parts = []
        for fate, hosts in groups.items():
            verb, how = words[fate]
            if len(hosts) > 1:  # 'runs' → 'run', 'is' → 'are'
                verb = verb.replace("still runs", "still run").replace(
                    "is switched", "are switched"
                )
                verb = "run" + verb.removeprefix("runs") if verb.startswith("runs") else verb
            parts.append(f"{hosts_text(hosts)} {verb}" + (f", {how}" if how else ""))
        return "; ".join(parts)
