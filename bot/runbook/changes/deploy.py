"""The runbook's deployment ("Standard Deployment" and "Deployment Options"), as steps.

    lock → checklist (CI) → reach the hosts → version → build → test → package → backup →
    upload → install → restart and verify, one host at a time → smoke → record → unlock

`Deploy.run()` yields progress events (bot/runbook/progress.py) and ends with `Finished`. It
knows nothing about Slack. The environment lock is taken by the caller before it runs
(bot/store/deployments.py begin_deployment) and released by the caller when it ends.

- build, test, version and smoke run on the bot's machine, in `workdir`, as the operator wrote
  them (`Shell`), with EVENTMESH_VERSION (and for smoke EVENTMESH_ENVIRONMENT and
  EVENTMESH_BASE_URL) exported; the version is checked against [A-Za-z0-9._-]{1,64} before
  it goes anywhere.
- backup, upload and install touch up to 5 hosts at once; restart goes one host at a time
  and each host is verified (3 passing /healthz in a row within verify_timeout) before the
  next: a restart command's exit status proves nothing.
- A failure at or after the restart, with auto_rollback on, switches every changed host back
  to the release it ran before (or this deploy's backup when it had none), restarts and
  verifies it, and marks the failed release bad in the host's release log.
- A cancel request is honoured before the next step, never in the middle of the restarts.
- `--dry-run` yields the same steps as StepPlanned with the exact commands, and runs nothing
  but the `version` command (which only prints the version).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.runbook.changes import releases
from bot.runbook.changes.activate import (
    PASSES_NEEDED,
    Activator,
    Clocked,
    human_duration,
    human_size,
    one_line,
    short,
    show_version,
)
from bot.runbook.changes.ci import CiClient, CiError
from bot.runbook.changes.packaging import Package, PackagingError, build_package, find_artifacts
from bot.runbook.changes.progress import (
    Event,
    Finished,
    HostsChanged,
    Note,
    Outcome,
    StepDone,
    StepFailed,
    StepPlanned,
    StepSkipped,
    StepStarted,
    VersionKnown,
    redact,
    tail,
)
from bot.runbook.changes.releases import HostState, Layout, RemoteCommandFailed, shown
from bot.runbook.health.probe import Prober
from bot.transport.base import (
    CommandResult,
    ConnectFailed,
    HostKeyRejected,
    Shell,
    Transport,
    TransportError,
)

log = logging.getLogger(__name__)

STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("checklist", "Checklist: CI"),
    ("hosts", "Reach the hosts"),
    ("version", "Version"),
    ("build", "Build"),
    ("test", "Test"),
    ("package", "Package"),
    ("backup", "Backup"),
    ("upload", "Upload"),
    ("install", "Install"),
    ("restart", "Restart and verify"),
    ("smoke", "Smoke tests"),
    ("record", "Record the release"),
    ("unlock", "Unlock"),
)
ROLLBACK = ("rollback", "Roll back")
TITLES = dict((*STEPS, ROLLBACK))
# Up to here nothing the service runs has changed; a cancel is honoured before each of these.
BEFORE_RESTART = ("checklist", "hosts", "version", "build", "test", "package", "backup")
MAX_PARALLEL_HOSTS = 5  # sshd's MaxStartups refuses bursts

OpenHosts = Callable[[Environment], AbstractAsyncContextManager[list[Transport]]]
CancelCheck = Callable[[], Awaitable[str | None]]

# Packaging hashes and gzips up to hundreds of MB: its own threads, never the event loop and
# never asyncio's small default executor (the store's queries run there).
_packaging = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deploy-package")


@dataclass(frozen=True)
class DeployOptions:
    dry_run: bool = False
    skip_tests: bool = False
    no_backup: bool = False

    def flags(self) -> list[str]:
        return [
            flag
            for flag, on in (
                ("--dry-run", self.dry_run),
                ("--skip-tests", self.skip_tests),
                ("--no-backup", self.no_backup),
            )
            if on
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "skip_tests": self.skip_tests,
            "no_backup": self.no_backup,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DeployOptions:
        return cls(
            dry_run=bool(data.get("dry_run")),
            skip_tests=bool(data.get("skip_tests")),
            no_backup=bool(data.get("no_backup")),
        )


@dataclass(frozen=True)
class DeployRequest:
    environment: Environment
    version: str | None
    options: DeployOptions
    requested_by: str
    approved_by: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and not releases.is_version(self.version):
            raise ValueError(f"{self.version!r} is not a version")


@dataclass
class HostPlan:
    """One host through the deploy: what ran before, what was installed, what was changed."""

    state: HostState | None = None
    previous: str | None = None  # release id current before this deploy (or adopted now)
    previous_version: str | None = None
    installed: bool = False
    changed: bool = False  # the `current` link was switched to the new release
    backup: str | None = None

    def as_dict(self, release_id: str | None) -> dict[str, object]:
        return {
            "previous": self.previous,
            "previous_version": self.previous_version,
            "release": release_id if self.installed else None,
            "changed": self.changed,
            "backup": self.backup,
        }


class StepError(Exception):
    """A step failed; its StepFailed event has been (or is about to be) yielded."""

    def __init__(self, event: StepFailed, *, announced: bool = False) -> None:
        super().__init__(event.error)
        self.event = event
        self.announced = announced


class Deploy:
    def __init__(
        self,
        request: DeployRequest,
        config: Config,
        *,
        http: httpx.AsyncClient,
        prober: Prober,
        open_hosts: OpenHosts,
        local: Transport,
        clock: Clock = utc_now,
        cancel_requested: CancelCheck | None = None,
    ) -> None:
        self.request = request
        self.config = config
        self.env = request.environment
        self.settings = request.environment.deploy
        self.layout = Layout.of(request.environment)
        self.http = http
        self.open_hosts = open_hosts
        self.local = local
        self.clock = clock
        self.cancel_requested = cancel_requested
        self.ci = CiClient(config.ci, http) if config.ci is not None else None
        self.version: str | None = request.version
        self.release_id: str | None = None
        self.package: Package | None = None
        self.hosts: dict[str, HostPlan] = {}
        self.unreachable: list[str] = []  # hosts that could not be logged into
        self.started = time.monotonic()
        self.secrets = self.ci.secrets if self.ci else ()
        self.activator = Activator(
            request.environment, config, prober, clock=clock, secrets=self.secrets
        )

    # --- the procedure ---------------------------------------------------------------------

    async def run(self) -> AsyncIterator[Event]:
        if self.request.options.dry_run:
            async for event in self._plan():
                yield event
            return
        yield StepDone("lock", detail=f"{self.env.name} is locked for this deploy")
        workspace = Path(tempfile.mkdtemp(prefix="eventmesh-deploy-"))
        try:
            async for event in self._run(workspace):
                yield event
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    async def _run(self, workspace: Path) -> AsyncIterator[Event]:
        local_steps: list[tuple[str, Callable[[], AsyncIterator[Event]]]] = [
            ("checklist", self._checklist),
            ("hosts", self._reach_hosts),
            ("version", self._version),
            ("build", self._build),
            ("test", self._test),
            ("package", lambda: self._package(workspace)),
        ]
        for name, step in local_steps:
            stopped = await self._stopped_before(name)
            if stopped is not None:
                yield stopped
                return
            try:
                async for event in step():
                    yield event
            except StepError as failure:
                if not failure.announced:
                    yield failure.event
                yield Finished(self._failed_untouched(failure.event))
                return
        async with self.open_hosts(self.env) as hosts:
            async for event in self._on_hosts(hosts):
                yield event

    async def _on_hosts(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        host_steps: list[tuple[str, Callable[[list[Transport]], AsyncIterator[Event]]]] = [
            ("backup", self._backup),
            ("upload", self._upload),
            ("install", self._install),
        ]
        for name, step in host_steps:
            stopped = await self._stopped_before(name, hosts)
            if stopped is not None:
                yield stopped
                return
            try:
                async for event in step(hosts):
                    yield event
            except StepError as failure:
                if not failure.announced:
                    yield failure.event
                await self._remove_unused_release(hosts)
                yield Finished(self._failed_untouched(failure.event))
                return
        stopped = await self._stopped_before("restart", hosts)
        if stopped is not None:
            yield stopped
            return
        # From the first switch on, a failure is rolled back (auto_rollback).
        after_restart: list[tuple[str, Callable[[list[Transport]], AsyncIterator[Event]]]] = [
            ("restart", self._restart),
            ("smoke", self._smoke),
            ("record", self._record),
        ]
        for name, step in after_restart:
            if name != "restart":
                stopped = await self._stopped_before(name, hosts, live=True)
                if stopped is not None:
                    yield stopped
                    return
            try:
                async for event in step(hosts):
                    yield event
            except StepError as failure:
                if not failure.announced:
                    yield failure.event
                async for event in self._after_failure(hosts, failure.event):
                    yield event
                return
        yield StepDone("unlock", detail=f"{self.env.name} is free again")
        summary = f"Deployed {show_version(self.version)} to {self.env.name}"
        count = len(hosts)
        summary += f" ({count} host{'s' if count != 1 else ''}) in {human_duration(self._seconds)}"
        yield Finished(self._outcome("succeeded", summary))

    @property
    def _seconds(self) -> float:
        return time.monotonic() - self.started

    def _outcome(self, state: str, summary: str, failure: StepFailed | None = None) -> Outcome:
        return Outcome(
            state=state,
            summary=summary,
            version=self.version,
            failed_step=failure.step if failure else None,
            failed_host=(failure.host or None) if failure else None,
            error=failure.error if failure else None,
            output=failure.output if failure else "",
            seconds=self._seconds,
            hosts=self._hosts_dict(),
        )

    def _hosts_dict(self) -> dict[str, dict[str, object]]:
        return {target: plan.as_dict(self.release_id) for target, plan in self.hosts.items()}

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

    async def _stopped_before(
        self, step: str, hosts: Sequence[Transport] = (), *, live: bool = False
    ) -> Finished | None:
        if self.cancel_requested is None:
            return None
        who = await self.cancel_requested()
        if who is None:
            return None
        if live:
            state = (
                f"{show_version(self.version)} is live on every host and verified healthy, "
                f"but {TITLES[step].lower()} did not run; /rollback {self.env.name} goes back"
            )
        else:
            await self._remove_unused_release(hosts)
            state = "nothing the service runs was changed"
        summary = f"Cancelled before {TITLES[step]}: {state}."
        return Finished(replace(self._outcome("cancelled", summary), cancelled_by=who))

    # --- steps on the bot's machine ----------------------------------------------------------

    async def _checklist(self) -> AsyncIterator[Event]:
        if self.ci is None:
            yield StepSkipped("checklist", "CI not checked: there is no `ci` section in the config")
            return
        clocked = Clocked()
        yield StepStarted("checklist")
        try:
            verdict = await self.ci.gate()
        except CiError as exc:
            raise StepError(StepFailed("checklist", "", clocked.seconds, f"CI: {exc}")) from None
        if not verdict.passed:
            link = f" ({verdict.run.url})" if verdict.run and verdict.run.url else ""
            raise StepError(
                StepFailed(
                    "checklist", "", clocked.seconds, f"CI is not green: {verdict.summary}{link}"
                )
            )
        yield StepDone("checklist", seconds=clocked.seconds, detail=verdict.summary)

    async def _reach_hosts(self) -> AsyncIterator[Event]:
        async def look(host: Transport) -> str:
            state, _ = await releases.inspect(host, self.layout)
            plan = self.hosts.setdefault(host.target, HostPlan())
            plan.state = state
            return describe_host(state)

        async with self.open_hosts(self.env) as hosts:
            for host in hosts:
                self.hosts.setdefault(host.target, HostPlan())
            async for event in self._each_host("hosts", hosts, look):
                yield event

    async def _version(self) -> AsyncIterator[Event]:
        if self.version is not None:
            yield StepDone("version", detail=f"{show_version(self.version)} (given)")
        else:
            clocked = Clocked()
            yield StepStarted("version", detail=f"`{self.settings.version}`")
            result = await self._local(Shell(self.settings.version), "version")
            printed = result.stdout.strip()
            if not releases.is_version(printed):
                shown_text = printed[:64] or "nothing"
                raise StepError(
                    StepFailed(
                        "version",
                        "",
                        clocked.seconds,
                        f"`{self.settings.version}` printed {shown_text!r}, which is not a "
                        "version (1-64 of A-Z a-z 0-9 . _ -)",
                    )
                )
            self.version = printed
            yield StepDone("version", seconds=clocked.seconds, detail=show_version(printed))
        self.release_id = releases.new_release_id(self.clock(), self.version)
        yield VersionKnown(self.version)

    def _exported(self, command: str, *, smoke: bool = False) -> Shell:
        assert self.version is not None
        exports = [f"EVENTMESH_VERSION={shlex.quote(self.version)}"]
        if smoke:
            exports += [
                f"EVENTMESH_ENVIRONMENT={shlex.quote(self.env.name)}",
                f"EVENTMESH_BASE_URL={shlex.quote(self.env.base_url)}",
            ]
        return Shell(f"export {' '.join(exports)}; {command}")

    async def _local(self, command: Shell, step: str) -> CommandResult:
        """Run an operator's command in workdir on the bot's machine; non-zero is a failure."""
        clocked = Clocked()
        try:
            result = await self.local.run(command, cwd=str(self.settings.workdir))
        except TransportError as exc:
            raise StepError(StepFailed(step, "", clocked.seconds, one_line(exc))) from None
        if not result.ok:
            raise StepError(
                StepFailed(
                    step,
                    "",
                    clocked.seconds,
                    f"`{short(command.text)}` exited with status {result.exit_status}",
                    self.activator.output(result),
                )
            )
        return result

    def _output(self, result: CommandResult) -> str:
        return redact(tail(result.tail(40)), self.secrets)

    async def _build(self) -> AsyncIterator[Event]:
        clocked = Clocked()
        yield StepStarted("build", detail=f"`{self.settings.build}`")
        await self._local(self._exported(self.settings.build), "build")
        yield StepDone("build", seconds=clocked.seconds, detail=f"`{self.settings.build}` passed")

    async def _test(self) -> AsyncIterator[Event]:
        if self.request.options.skip_tests:
            yield StepSkipped("test", "skipped (--skip-tests: emergency deployment)")
            return
        clocked = Clocked()
        yield StepStarted("test", detail=f"`{self.settings.test}`")
        await self._local(self._exported(self.settings.test), "test")
        yield StepDone("test", seconds=clocked.seconds, detail=f"`{self.settings.test}` passed")

    async def _package(self, workspace: Path) -> AsyncIterator[Event]:
        assert self.version is not None
        clocked = Clocked()
        yield StepStarted("package")
        workdir = Path(self.settings.workdir)
        version = self.version

        def make() -> Package:
            return build_package(
                version, find_artifacts(workdir, self.settings.artifacts), workspace
            )

        try:
            self.package = await asyncio.get_running_loop().run_in_executor(_packaging, make)
        except PackagingError as exc:
            raise StepError(StepFailed("package", "", clocked.seconds, str(exc))) from None
        except OSError as exc:
            raise StepError(
                StepFailed("package", "", clocked.seconds, f"cannot package: {exc}")
            ) from None
        package = self.package
        names = ", ".join(a.name for a in package.artifacts)
        yield StepDone(
            "package",
            seconds=clocked.seconds,
            detail=(
                f"{package.path.name} ({human_size(package.size)}: {names}) "
                f"sha256 {package.sha256[:12]}…"
            ),
        )

    # --- steps on the hosts --------------------------------------------------------------

    async def _each_host(
        self,
        step: str,
        hosts: Sequence[Transport],
        work: Callable[[Transport], Awaitable[str]],
    ) -> AsyncIterator[Event]:
        async for event in each_host(
            step, hosts, work, output=self.activator.output, unreachable=self.unreachable
        ):
            yield event

    def _plan_of(self, host: Transport) -> HostPlan:
        return self.hosts.setdefault(host.target, HostPlan())

    async def _backup(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        if self.request.options.no_backup:
            yield StepSkipped("backup", "skipped (--no-backup)")
            return
        taken_at = self.clock()  # one name on every host: one backup of the environment

        async def back_up(host: Transport) -> str:
            plan = self._plan_of(host)
            state = plan.state or (await releases.inspect(host, self.layout))[0]
            backup, removed = await releases.take_backup(host, self.layout, state, taken_at)
            if backup is None:
                return "nothing to back up yet (nothing installed on this host)"
            plan.backup = backup.name
            pruned = f"; {len(removed)} old removed (keep_backups {self.layout.keep_backups})"
            return f"{backup.name} ({human_size(backup.size)}){pruned if removed else ''}"

        async for event in self._each_host("backup", hosts, back_up):
            yield event
        yield HostsChanged(self._hosts_dict())

    async def _upload(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        assert self.package is not None and self.version is not None
        package, remote = self.package, self.layout.package_path(self.version)

        async def upload(host: Transport) -> str:
            await releases.run_checked(host, [["mkdir", "-p", self.layout.path("packages")]])
            sent = await host.upload(package.path, remote)
            if sent.skipped:
                return f"already there ({package.path.name}, same sha256): upload skipped"
            took = f"{sent.duration_s:.1f}s"
            if sent.duration_s >= 0.1:
                took += f" ({sent.size / sent.duration_s / 1e6:.0f} MB/s)"
            return f"{human_size(sent.size)} in {took}, sha256 verified"

        async for event in self._each_host("upload", hosts, upload):
            yield event

    async def _install(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        assert self.package is not None and self.version is not None and self.release_id
        package, release_id = self.package, self.release_id
        remote = self.layout.package_path(self.version)

        async def install(host: Transport) -> str:
            plan = self._plan_of(host)
            state = plan.state or (await releases.inspect(host, self.layout))[0]
            notes = []
            if state.needs_adoption:
                adopted = await releases.adopt(host, self.layout, self.clock())
                plan.previous, plan.previous_version = adopted, None
                notes.append(f"adopted the hand-made bin/ as release {adopted}")
            elif state.current_release is not None:
                plan.previous = state.current
                plan.previous_version = state.current_release.version
            # else: nothing to switch back to on this host (or its folder is gone): a rollback
            # restores this deploy's backup instead.
            (checked,) = await releases.run_checked(host, [["sha256sum", remote]])
            found = checked.stdout.split()[0] if checked.stdout.split() else ""
            if found != package.sha256:
                raise StepError(
                    StepFailed(
                        "install",
                        host.target,
                        0.0,
                        f"{remote} has sha256 {found[:12] or 'none'}…, expected "
                        f"{package.sha256[:12]}…: the upload is corrupt",
                    )
                )
            await releases.run_checked(host, self.layout.unpack_commands(release_id, remote))
            plan.installed = True
            event = releases.log_event(
                "installed",
                release_id,
                self.clock(),
                version=self.version,
                by=self.request.requested_by,
                sha256=package.sha256,
            )
            await releases.run_checked(host, [self.layout.log_command(event)])
            notes.append(f"unpacked into releases/{release_id}, files checked")
            return "; ".join(notes)

        async for event in self._each_host("install", hosts, install):
            yield event
        yield HostsChanged(self._hosts_dict())

    async def _restart(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        assert self.release_id is not None
        for index, host in enumerate(hosts):
            plan = self._plan_of(host)
            last = index == len(hosts) - 1
            clocked = Clocked()
            yield StepStarted("restart", host.target, f"switching to {self.release_id}")
            plan.changed = True  # from here on this host must be rolled back on failure
            yield HostsChanged(self._hosts_dict())
            failure = await self.activator.activate(
                host,
                self.release_id,
                expect=self.version if last else None,
                accept=(self.version, plan.previous_version),
                step="restart",
                clocked=clocked,
            )
            if failure is not None:
                raise StepError(failure)
            yield StepDone(
                "restart",
                host.target,
                clocked.seconds,
                f"healthy on {show_version(self.version)}, {PASSES_NEEDED} checks in a row",
            )

    async def _smoke(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        if self.settings.smoke is None:
            yield StepSkipped("smoke", "no `smoke` command in the config")
            return
        clocked = Clocked()
        yield StepStarted("smoke", detail=f"`{self.settings.smoke}`")
        await self._local(self._exported(self.settings.smoke, smoke=True), "smoke")
        yield StepDone("smoke", seconds=clocked.seconds, detail=f"`{self.settings.smoke}` passed")

    async def _record(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        assert self.release_id is not None
        release_id = self.release_id

        async def record(host: Transport) -> str:
            plan = self._plan_of(host)
            good = releases.log_event("good", release_id, self.clock())
            await releases.run_checked(host, [self.layout.log_command(good)])
            protect = [plan.previous] if plan.previous else []
            removed = await releases.prune(host, self.layout, protect=protect)
            pruned = (
                f"; {len(removed)} old release(s) removed (keep_releases "
                f"{self.layout.keep_releases})"
            )
            return f"{release_id} marked good{pruned if removed else ''}"

        async for event in self._each_host("record", hosts, record):
            yield event

    # --- after a failure -------------------------------------------------------------------

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
        back_on: list[str] = []
        stuck: list[tuple[Transport, StepFailed]] = []
        for index, host in enumerate(changed):
            plan = self._plan_of(host)
            last = index == len(changed) - 1
            clocked = Clocked()
            yield StepStarted("rollback", host.target)
            try:
                target, version = await self._rollback_target(host, plan)
            except (TransportError, RemoteCommandFailed) as exc:
                stuck.append(
                    (host, StepFailed("rollback", host.target, clocked.seconds, one_line(exc)))
                )
                yield stuck[-1][1]
                continue
            if target is None:
                stuck.append(
                    (
                        host,
                        StepFailed(
                            "rollback",
                            host.target,
                            clocked.seconds,
                            "nothing to roll back to: no earlier release on the host and no "
                            "backup from this deploy",
                        ),
                    )
                )
                yield stuck[-1][1]
                continue
            problem = await self.activator.activate(
                host,
                target,
                expect=version if last else None,
                accept=(version, self.version),
                step="rollback",
                clocked=clocked,
            )
            if problem is not None:
                stuck.append((host, problem))
                yield problem
                continue
            plan.changed = False
            back_on.append(host.target)
            yield StepDone(
                "rollback",
                host.target,
                clocked.seconds,
                f"back on {show_version(version) if version else target}, healthy",
            )
        await self._mark_bad(hosts, f"{what} {why}")
        yield HostsChanged(self._hosts_dict())
        previous = {self._plan_of(h).previous_version for h in changed}
        back_to = (
            show_version(previous.pop())
            if len(previous) == 1 and None not in previous
            else ("the previous release")
        )
        if not stuck:
            yield StepDone("unlock", detail=f"{self.env.name} is free again")
            summary = f"Rolled back to {back_to}: {what} {why}."
            yield Finished(self._outcome("rolled_back", summary, failure))
            return
        broken = "; ".join(f"{h.target}: {f.error}" for h, f in stuck)
        summary = (
            f"Deploy of {what} to {self.env.name} failed ({why}) and the rollback failed too — "
            f"{broken}. Someone must look at {', '.join(h.target for h, _ in stuck)} now."
        )
        yield Finished(self._outcome("rollback_failed", summary, failure))

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
        if self.release_id is None:
            return
        event = releases.log_event("bad", self.release_id, self.clock(), reason=reason)
        for host in hosts:
            if not self._plan_of(host).installed:
                continue
            try:
                await releases.run_checked(host, [self.layout.log_command(event)])
            except (TransportError, RemoteCommandFailed) as exc:
                log.error("could not mark %s bad on %s: %s", self.release_id, host.target, exc)

    async def _remove_unused_release(self, hosts: Sequence[Transport]) -> None:
        """A release unpacked by a deploy that never switched to it is removed again."""
        if self.release_id is None:
            return
        for host in hosts:
            plan = self._plan_of(host)
            if not plan.installed or plan.changed:
                continue
            try:
                await releases.run_checked(
                    host, [self.layout.remove_releases_command([self.release_id])]
                )
                plan.installed = False
            except (TransportError, RemoteCommandFailed) as exc:
                log.warning(
                    "could not remove unused %s on %s: %s", self.release_id, host.target, exc
                )

    # --- dry run ---------------------------------------------------------------------------

    async def _plan(self) -> AsyncIterator[Event]:
        layout, settings, env = self.layout, self.settings, self.env
        targets = [str(h) for h in env.hosts] if env.hosts else ["local"]
        local = f"bot ({settings.workdir})"
        yield StepPlanned("lock", (), f"a real run locks {env.name}; a dry run takes no lock")
        if self.ci is None:
            yield StepPlanned("checklist", (), "CI not checked: there is no `ci` section")
        else:
            yield StepPlanned(
                "checklist",
                (
                    f"bot: GET {self.config.ci.api_url}/repos/{self.config.ci.repository}"  # type: ignore[union-attr]
                    " (the default branch)",
                    f"bot: GET {self.ci.runs_url('<default branch>')}",
                ),
                "the latest run must have passed",
            )
        yield StepPlanned(
            "hosts", tuple(f"{t}: {shown(layout.inspect_command())}" for t in targets)
        )
        note = ""
        if self.version is None:
            result = await self.local.run(Shell(settings.version), cwd=str(settings.workdir))
            printed = result.stdout.strip()
            if result.ok and releases.is_version(printed):
                self.version = printed
                note = (
                    f"`{settings.version}` says {show_version(printed)} "
                    "(the only command a dry run runs)"
                )
            else:
                self.version = "VERSION"
                note = f"`{settings.version}` did not print a version; VERSION stands for it below"
        else:
            note = f"{show_version(self.version)} (given)"
        yield StepPlanned(
            "version", (f"{local}: {settings.version}",) if not self.request.version else (), note
        )
        version = self.version
        release_id = releases.new_release_id(self.clock(), version)
        exports = f"export EVENTMESH_VERSION={shlex.quote(version)}; "
        yield StepPlanned("build", (f"{local}: {exports}{settings.build}",))
        if self.request.options.skip_tests:
            yield StepPlanned("test", (), "skipped (--skip-tests)")
        else:
            yield StepPlanned("test", (f"{local}: {exports}{settings.test}",))
        yield StepPlanned(
            "package",
            (
                f"bot: tar {' '.join(settings.artifacts)} as bin/* "
                f"→ {releases.package_name(version)}",
            ),
            "MANIFEST (sha256 of each file) and VERSION go in too",
        )
        name = releases.backup_name(env.name, self.clock())
        if self.request.options.no_backup:
            yield StepPlanned("backup", (), "skipped (--no-backup)")
        else:
            yield StepPlanned(
                "backup",
                tuple(
                    f"{t}: {shown(c)}"
                    for t in targets
                    for c in [
                        *layout.backup_commands(name, "current"),
                        layout.list_backups_command(),
                    ]
                ),
                f"then the oldest beyond keep_backups {layout.keep_backups} are removed; "
                "a hand-made bin/ is archived instead of current",
            )
        remote = layout.package_path(version)
        yield StepPlanned(
            "upload",
            tuple(
                f"{t}: mkdir -p {shlex.quote(layout.path('packages'))}; upload to {remote}"
                for t in targets
            ),
            "skipped where the host already has the same sha256",
        )
        _, adopt = releases.adoption(layout, self.clock())
        install = [
            ["sha256sum", remote],
            *layout.unpack_commands(release_id, remote),
            layout.log_command(
                releases.log_event("installed", release_id, self.clock(), version=version)
            ),
        ]
        yield StepPlanned(
            "install",
            tuple(
                line
                for t in targets
                for line in (
                    *(f"{t} (only if bin/ is a plain folder): {shown(c)}" for c in adopt),
                    *(f"{t}: {shown(c)}" for c in install),
                )
            ),
            "a hand-made bin/ is first adopted as a release of its own",
        )
        restart = [*layout.switch_commands(release_id)]
        yield StepPlanned(
            "restart",
            tuple(
                line
                for t in targets
                for line in (
                    *(f"{t}: {shown(c)}" for c in restart),
                    f"{t}: {settings.restart}",
                    f"bot: GET {env.healthz_url} until {PASSES_NEEDED} passes in a row "
                    f"(every {human_duration(settings.verify_interval.total_seconds())}, up to "
                    f"{human_duration(settings.verify_timeout.total_seconds())})",
                )
            ),
            "one host at a time; a failure from here on is rolled back"
            if settings.auto_rollback
            else "one host at a time; auto_rollback is off",
        )
        if settings.smoke is None:
            yield StepPlanned("smoke", (), "no `smoke` command in the config")
        else:
            yield StepPlanned("smoke", (f"{local}: {exports}{settings.smoke}",))
        good = layout.log_command(releases.log_event("good", release_id, self.clock()))
        yield StepPlanned(
            "record",
            tuple(f"{t}: {shown(good)}" for t in targets),
            f"then releases beyond keep_releases {layout.keep_releases} are removed",
        )
        yield StepPlanned("unlock", ())
        count = len(targets)
        summary = (
            f"Dry run of {show_version(version)} to {env.name} on {count} "
            f"host{'s' if count != 1 else ''}: nothing was built, copied or restarted."
        )
        yield Finished(Outcome("planned", summary, version=version, seconds=self._seconds))


async def each_host(
    step: str,
    hosts: Sequence[Transport],
    work: Callable[[Transport], Awaitable[str]],
    *,
    output: Callable[[CommandResult], str],
    unreachable: list[str] | None = None,
) -> AsyncIterator[Event]:
    """Run work on every host, up to MAX_PARALLEL_HOSTS at once, yielding as they go.

    Every host is tried; if any failed, StepError carries the first failure (announced).
    `output` shows a failing command's last lines; hosts that could not be logged into are
    added to `unreachable`.
    """
    queue: asyncio.Queue[Event] = asyncio.Queue()
    gate = asyncio.Semaphore(MAX_PARALLEL_HOSTS)
    failures: list[StepFailed] = []

    async def one(host: Transport) -> None:
        async with gate:
            clocked = Clocked()
            queue.put_nowait(StepStarted(step, host.target))
            try:
                detail = await work(host)
            except StepError as exc:
                failure = exc.event
            except (TransportError, RemoteCommandFailed) as exc:
                shown_output = output(exc.result) if isinstance(exc, RemoteCommandFailed) else ""
                if unreachable is not None and isinstance(exc, ConnectFailed | HostKeyRejected):
                    unreachable.append(host.target)
                failure = StepFailed(
                    step, host.target, clocked.seconds, one_line(exc), shown_output
                )
            else:
                queue.put_nowait(StepDone(step, host.target, clocked.seconds, detail))
                return
            failures.append(failure)
            queue.put_nowait(failure)

    tasks = [asyncio.create_task(one(host)) for host in hosts]
    finished = asyncio.gather(*tasks)
    try:
        while not (finished.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, finished}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        await finished  # re-raises a bug in work (anything but the failures above)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise StepError(failures[0], announced=True)


def describe_host(state: HostState) -> str:
    if not state.exists:
        return "nothing installed yet"
    if state.needs_adoption:
        return "a hand-made bin/ (it becomes a release on install)"
    current = state.current_release
    if current is None:
        return "no current release"
    kept = len(state.releases)
    return (
        f"runs {show_version(current.version) if current.version else current.id}"
        f" ({kept} release{'s' if kept != 1 else ''} kept)"
    )


def _why(failure: StepFailed) -> str:
    if failure.step in ("restart", "rollback") and failure.error.startswith("failed its health"):
        return failure.error
    where = f" on {failure.host}" if failure.host else ""
    return f"failed at {TITLES[failure.step].lower()}{where} ({failure.error})"
