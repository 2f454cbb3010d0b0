"""A deploy's steps, each written once: what it does, and next to it what a dry run says it
would do (the exact commands, host by host).

    checklist (CI) → reach the hosts → version → build → test → package      on the bot's machine
    → backup → upload → install → restart and verify                         on the hosts
    → smoke → record                                                         live

- build, test, version and smoke run on the bot's machine, in the deploy's own workspace of
  `workdir` (workspace.py: a git worktree at the commit, or a clean copy; removed when the
  deploy ends), as the operator wrote them (`Shell`), with EVENTMESH_VERSION (and for smoke
  EVENTMESH_ENVIRONMENT and EVENTMESH_BASE_URL) exported; the version is checked against
  [A-Za-z0-9._-]{1,64} before it goes anywhere.
- backup, upload and install touch up to 5 hosts at once; restart goes one host at a time
  and each host is verified (3 passing /healthz in a row within verify_timeout) before the
  next: a restart command's exit status proves nothing.
- An approved deploy (request.package) builds nothing: it deploys the package the approver
  approved, checked unchanged (its sha256) before the upload. Every host checks its copy
  against the package's sha256 before it is put in place (or skipped: already there), so
  install trusts the file and reads it only to unpack it.

The order, Cancel between steps and what a failure does are the procedure's (deploy.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import httpx

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.changes import leftovers, releases
from bot.runbook.changes.activate import (
    PASSES_NEEDED,
    Activator,
    Clocked,
    human_duration,
    human_size,
    show_version,
)
from bot.runbook.changes.ci import CiClient, CiError
from bot.runbook.changes.deploy_local import LocalSteps
from bot.runbook.changes.deploy_request import DeployRequest, PinnedPackage
from bot.runbook.changes.packaging import Package
from bot.runbook.changes.procedure import CancelCheck, OpenHosts, StepError, each_host
from bot.runbook.changes.progress import (
    Event,
    HostsChanged,
    StepDone,
    StepFailed,
    StepPlanned,
    StepSkipped,
    StepStarted,
)
from bot.runbook.changes.releases import HostState, Layout, shown
from bot.runbook.changes.workspace import (
    Workspace,
)
from bot.runbook.health.probe import Prober
from bot.transport.base import Transport

# The deploy's checklist, as its message shows it.
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


class Phase(Enum):
    """Where the environment is when a step starts: it says what a Cancel before the step
    leaves behind, and whether the step needs the hosts open."""

    LOCAL = "on the bot's machine; nothing on the hosts has changed"
    HOSTS = "on the hosts, before the switch; nothing the service runs has changed"
    LIVE = "after the switch; the new release is live on every host"


@dataclass(frozen=True)
class Step:
    """One step of a deploy: what it does, and what a dry run says it would do."""

    key: str
    phase: Phase
    run: Callable[[list[Transport]], AsyncIterator[Event]]
    plan: Callable[[], Awaitable[StepPlanned]]


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


def steps_to_run(request: DeployRequest, config: Config) -> list[str]:
    """What an approver approves: the titles of the steps this deploy will run."""
    options, settings = request.options, request.environment.deploy
    left_out = {
        "test": options.skip_tests,
        "backup": options.no_backup,
        "smoke": settings.smoke is None,
        "checklist": config.ci is None,
    }
    return [title for key, title in STEPS if not left_out.get(key, False)]


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


class DeploySteps(LocalSteps):
    """A deploy's state as its steps fill it in, and the steps themselves."""

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
        workspaces: Path | None = None,
    ) -> None:
        self.request = request
        self.config = config
        self.env = request.environment
        self.settings = request.environment.deploy
        self.layout = Layout.of(request.environment)
        self.open_hosts = open_hosts
        self.local = local
        self.clock = clock
        self.cancel_requested = cancel_requested
        self.ci = CiClient(config.ci, http) if config.ci is not None else None
        self.version: str | None = request.version
        self.release_id: str | None = None
        self.package: Package | None = None
        # Where builds run: a new workspace under `workspaces` for each deploy (workspace.py).
        self.workspaces = workspaces or Path(tempfile.gettempdir()) / "eventmesh-workspaces"
        self.workspace: Workspace | None = None
        self.package_dir: Path | None = None  # where the package is written (a real run's)
        self.pinned: PinnedPackage | None = request.package
        self.commit: str | None = self.pinned.commit if self.pinned else None
        self.hosts: dict[str, HostPlan] = {}
        self.unreachable: list[str] = []  # hosts that could not be logged into
        self.started = time.monotonic()
        self.secrets = self.ci.secrets if self.ci else ()
        self.activator = Activator(
            request.environment, config, prober, clock=clock, secrets=self.secrets
        )

    def steps(self) -> tuple[Step, ...]:
        """Every step between the lock and the unlock, in order."""
        local, hosts, live = Phase.LOCAL, Phase.HOSTS, Phase.LIVE
        return (
            Step("checklist", local, lambda _: self._checklist(), self._plan_checklist),
            Step("hosts", local, lambda _: self._reach_hosts(), self._plan_hosts),
            Step("version", local, lambda _: self._version(), self._plan_version),
            Step("build", local, lambda _: self._build(), self._plan_build),
            Step("test", local, lambda _: self._test(), self._plan_test),
            Step("package", local, lambda _: self._package(), self._plan_package),
            Step("backup", hosts, self._backup, self._plan_backup),
            Step("upload", hosts, self._upload, self._plan_upload),
            Step("install", hosts, self._install, self._plan_install),
            Step("restart", hosts, self._restart, self._plan_restart),
            Step("smoke", live, lambda _: self._smoke(), self._plan_smoke),
            Step("record", live, self._record, self._plan_record),
        )

    @property
    def _seconds(self) -> float:
        return time.monotonic() - self.started

    def _hosts_dict(self) -> dict[str, dict[str, object]]:
        return {target: plan.as_dict(self.release_id) for target, plan in self.hosts.items()}

    def _plan_of(self, host: Transport) -> HostPlan:
        return self.hosts.setdefault(host.target, HostPlan())

    # --- what a dry run shows: where each command runs ---------------------------------------

    @property
    def _targets(self) -> list[str]:
        """The hosts by name, without logging into them."""
        return [str(h) for h in self.env.hosts] if self.env.hosts else ["local"]

    def _on_every_host(self, *commands: list[str]) -> tuple[str, ...]:
        return tuple(f"{t}: {shown(c)}" for t in self._targets for c in commands)

    # --- on the bot's machine ------------------------------------------------------------------

    async def _checklist(self) -> AsyncIterator[Event]:
        if self.ci is None:
            yield StepSkipped("checklist", "CI not checked: there is no `ci` section in the config")
            return
        clocked = Clocked()
        yield StepStarted("checklist")
        await self._ensure_workspace("checklist")
        try:
            verdict = await self.ci.gate(self.commit)
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

    async def _plan_checklist(self) -> StepPlanned:
        if self.ci is None:
            return StepPlanned("checklist", (), "CI not checked: there is no `ci` section")
        return StepPlanned(
            "checklist",
            (
                f"bot: GET {self.ci.repo_url} (the default branch)",
                f"bot: GET {self.ci.runs_url('<default branch>')}",
            ),
            "the latest run must have passed",
        )

    async def _reach_hosts(self) -> AsyncIterator[Event]:
        async def look(host: Transport) -> str:
            tidied = await leftovers.tidy(host, self.layout)  # what a run cut short left
            state, _ = await releases.inspect(host, self.layout)
            self._plan_of(host).state = state
            done = f" (left by a run cut short: {'; '.join(tidied)})" if tidied else ""
            return describe_host(state) + done

        async with self.open_hosts(self.env) as hosts:
            for host in hosts:
                self._plan_of(host)
            async for event in self._each_host("hosts", hosts, look):
                yield event

    async def _plan_hosts(self) -> StepPlanned:
        return StepPlanned(
            "hosts",
            self._on_every_host(leftovers.tidy_command(self.layout), self.layout.inspect_command()),
        )

    async def _smoke(self) -> AsyncIterator[Event]:
        if self.settings.smoke is None:
            yield StepSkipped("smoke", "no `smoke` command in the config")
            return
        async for event in self._operators_command("smoke", self.settings.smoke, smoke=True):
            yield event

    async def _plan_smoke(self) -> StepPlanned:
        if self.settings.smoke is None:
            return StepPlanned("smoke", (), "no `smoke` command in the config")
        return self._plan_operators_command("smoke", self.settings.smoke, smoke=True)

    # --- on the hosts ----------------------------------------------------------------------------

    def _each_host(
        self,
        step: str,
        hosts: list[Transport],
        work: Callable[[Transport], Awaitable[str]],
    ) -> AsyncIterator[Event]:
        return each_host(step, hosts, work, secrets=self.secrets, unreachable=self.unreachable)

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

    async def _plan_backup(self) -> StepPlanned:
        if self.request.options.no_backup:
            return StepPlanned("backup", (), "skipped (--no-backup)")
        name = releases.backup_name(self.env.name, self.clock())
        return StepPlanned(
            "backup",
            self._on_every_host(
                *self.layout.backup_commands(name, "current"), self.layout.list_backups_command()
            ),
            f"then the oldest beyond keep_backups {self.layout.keep_backups} are removed; "
            "a hand-made bin/ is archived instead of current",
        )

    async def _upload(self, hosts: list[Transport]) -> AsyncIterator[Event]:
        assert self.package is not None and self.version is not None
        package, remote = self.package, self.layout.package_path(self.version)

        async def upload(host: Transport) -> str:
            # The host makes packages/ itself and checks its copy against the package's
            # sha256 before the copy takes the package's name.
            sent = await host.upload(package.path, remote, sha256=package.sha256)
            if sent.skipped:
                return f"already there ({package.path.name}, same sha256): upload skipped"
            took = f"{sent.duration_s:.1f}s"
            if sent.duration_s >= 0.1:
                took += f" ({sent.size / sent.duration_s / 1e6:.0f} MB/s)"
            return f"{human_size(sent.size)} in {took}, sha256 verified"

        async for event in self._each_host("upload", hosts, upload):
            yield event

    async def _plan_upload(self) -> StepPlanned:
        assert self.version is not None
        remote = self.layout.package_path(self.version)
        return StepPlanned(
            "upload",
            tuple(f"{t}: upload to {remote}" for t in self._targets),
            "the host checks its copy against the package's sha256 before it takes the name; "
            "skipped where the host already has the same sha256",
        )

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
            await releases.run_checked(
                host, self.layout.unpack_commands(release_id, remote), point="unpack"
            )
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

    async def _plan_install(self) -> StepPlanned:
        assert self.version is not None and self.release_id is not None
        remote = self.layout.package_path(self.version)
        _, adopt = releases.adoption(self.layout, self.clock())
        installed = releases.log_event(
            "installed", self.release_id, self.clock(), version=self.version
        )
        install = [
            *self.layout.unpack_commands(self.release_id, remote),
            self.layout.log_command(installed),
        ]
        return StepPlanned(
            "install",
            tuple(
                line
                for t in self._targets
                for line in (
                    *(f"{t} (only if bin/ is a plain folder): {shown(c)}" for c in adopt),
                    *(f"{t}: {shown(c)}" for c in install),
                )
            ),
            "a hand-made bin/ is first adopted as a release of its own",
        )

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

    async def _plan_restart(self) -> StepPlanned:
        assert self.release_id is not None
        settings = self.settings
        every = human_duration(settings.verify_interval.total_seconds())
        within = human_duration(settings.verify_timeout.total_seconds())
        return StepPlanned(
            "restart",
            tuple(
                line
                for t in self._targets
                for line in (
                    *(f"{t}: {shown(c)}" for c in self.layout.switch_commands(self.release_id)),
                    f"{t}: {settings.restart}",
                    f"bot: GET {self.env.healthz_url} until {PASSES_NEEDED} passes in a row "
                    f"(every {every}, up to {within})",
                )
            ),
            "one host at a time; a failure from here on is rolled back"
            if settings.auto_rollback
            else "one host at a time; auto_rollback is off",
        )

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

    async def _plan_record(self) -> StepPlanned:
        assert self.release_id is not None
        good = releases.log_event("good", self.release_id, self.clock())
        return StepPlanned(
            "record",
            self._on_every_host(self.layout.log_command(good)),
            f"then releases beyond keep_releases {self.layout.keep_releases} are removed",
        )
