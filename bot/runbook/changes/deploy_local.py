"""A deploy's steps on the bot's machine that make the package: version → build → test →
package, in the deploy's own workspace (workspace.py) — or, for an approved deploy, the package
the approver approved, checked unchanged (`pinned_problem`); or, with `deploy.source: ci`, the
CI run's artifact for the commit (ci_artifact.py), so nothing is built here.

A mixin of DeploySteps (deploy_steps.py), which holds the state these fill in.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.clock import Clock
from bot.config import Config, DeploySettings, Environment
from bot.runbook.changes import releases
from bot.runbook.changes.activate import (
    Activator,
    Clocked,
    human_size,
    one_line,
    short,
    show_version,
)
from bot.runbook.changes.ci import CiClient, CiError, CiRun
from bot.runbook.changes.ci_artifact import fetch_package
from bot.runbook.changes.deploy_request import DeployRequest, PinnedPackage
from bot.runbook.changes.packaging import Package, PackagingError, build_package, find_artifacts
from bot.runbook.changes.procedure import StepError
from bot.runbook.changes.progress import (
    Event,
    StepDone,
    StepFailed,
    StepPlanned,
    StepSkipped,
    StepStarted,
    VersionKnown,
)
from bot.runbook.changes.workspace import (
    Workspace,
    WorkspaceError,
    checkout_of,
    open_workspace,
    remove_workspace,
)
from bot.transport.base import CommandResult, Shell, Transport, TransportError

# Packaging hashes and gzips up to hundreds of MB: its own threads, never the event loop and
# never asyncio's small default executor (the store's queries run there).
_packaging = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deploy-package")


class LocalSteps:
    """version, build, test and package (and the operator's commands smoke reuses)."""

    request: DeployRequest
    config: Config
    env: Environment
    settings: DeploySettings
    local: Transport
    clock: Clock
    ci: CiClient | None
    activator: Activator
    version: str | None
    release_id: str | None
    package: Package | None
    workspaces: Path
    workspace: Workspace | None
    package_dir: Path | None
    pinned: PinnedPackage | None
    commit: str | None
    ci_run: CiRun | None = None  # with source: ci, the run whose artifact is deployed

    @property
    def _here(self) -> str:
        return f"bot ({self.settings.workdir})"

    async def _ensure_workspace(self, step: str) -> None:
        """This deploy's own workspace, made on first use (an approved deploy has none; one
        from CI only needs to know the commit)."""
        if self.pinned is not None or self.workspace is not None:
            return
        if self._from_ci:
            if self.commit is None:
                checkout = await checkout_of(Path(self.settings.workdir).resolve())
                self.commit = checkout[1] if checkout else None
            return
        clocked = Clocked()
        try:
            self.workspace = await open_workspace(
                Path(self.settings.workdir), self.workspaces, self.env.name
            )
        except WorkspaceError as exc:
            raise StepError(
                StepFailed(step, "", clocked.seconds, f"no build workspace: {exc}")
            ) from None
        self.commit = self.workspace.commit

    async def close_workspace(self) -> None:
        """Remove the workspace (and any process still running in it)."""
        if self.workspace is not None:
            workspace, self.workspace = self.workspace, None
            await remove_workspace(workspace)

    @property
    def _from_ci(self) -> bool:
        return self.pinned is None and self.settings.source == "ci"

    async def _fetch_from_ci(self) -> None:
        """The CI run's artifact for the commit, as this deploy's package (and version)."""
        assert self.ci is not None  # config.py: source: ci needs the ci section
        clocked = Clocked()
        if self.package_dir is None:
            self.workspaces.mkdir(parents=True, exist_ok=True)
            self.package_dir = Path(tempfile.mkdtemp(prefix="package-", dir=self.workspaces))
        try:
            got = await fetch_package(
                self.ci, self.commit, self.settings.ci_artifact, self.version, self.package_dir
            )
        except CiError as exc:
            raise StepError(
                StepFailed("version", "", clocked.seconds, f"no package from CI: {exc}")
            ) from None
        self.package, self.ci_run, self.version = got.package, got.run, got.package.version

    @property
    def _cwd(self) -> str:
        return str(self.workspace.path if self.workspace else self.settings.workdir)

    @property
    def _at_commit(self) -> str:
        return f", commit {self.commit[:12]}" if self.commit else ""

    async def _version(self) -> AsyncIterator[Event]:
        await self._ensure_workspace("version")
        if self.pinned is not None:
            yield StepDone(
                "version", detail=f"{show_version(self.pinned.version)} (approved{self._at_commit})"
            )
        elif self._from_ci:
            yield StepStarted("version", detail="asking CI for the commit's package")
            await self._fetch_from_ci()
            assert self.version is not None and self.ci_run is not None
            yield StepDone(
                "version",
                detail=f"{show_version(self.version)} (CI run {self.ci_run.id}{self._at_commit})",
            )
        elif self.version is not None:
            yield StepDone(
                "version", detail=f"{show_version(self.version)} (given{self._at_commit})"
            )
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

    async def _plan_version(self) -> StepPlanned:
        """The only command a dry run runs: the version, so the plan names the real one."""
        command = self.settings.version
        if self.version is not None:
            note = f"{show_version(self.version)} (given)"
        else:
            result = await self.local.run(Shell(command), cwd=str(self.settings.workdir))
            printed = result.stdout.strip()
            if result.ok and releases.is_version(printed):
                self.version = printed
                note = f"`{command}` says {show_version(printed)} (the only command a dry run runs)"
            else:
                self.version = "VERSION"
                note = f"`{command}` did not print a version; VERSION stands for it below"
        self.release_id = releases.new_release_id(self.clock(), self.version)
        ran = () if self.request.version else (f"{self._here}: {command}",)
        return StepPlanned("version", ran, note)

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
            result = await self.local.run(command, cwd=self._cwd)
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

    async def _operators_command(
        self, step: str, command: str, *, smoke: bool = False
    ) -> AsyncIterator[Event]:
        """build, test, smoke: the operator's command with the deploy's variables exported."""
        clocked = Clocked()
        yield StepStarted(step, detail=f"`{command}`")
        await self._local(self._exported(command, smoke=smoke), step)
        yield StepDone(step, seconds=clocked.seconds, detail=f"`{command}` passed")

    def _plan_operators_command(
        self, step: str, command: str, *, smoke: bool = False
    ) -> StepPlanned:
        return StepPlanned(step, (f"{self._here}: {self._exported(command, smoke=smoke).text}",))

    async def _build(self) -> AsyncIterator[Event]:
        if self.pinned is not None:
            yield StepSkipped("build", f"built before the approval{self._at_commit}")
            return
        if self.ci_run is not None:
            yield StepSkipped("build", f"built by CI (run {self.ci_run.id}): nothing built here")
            return
        async for event in self._operators_command("build", self.settings.build):
            yield event

    async def _plan_build(self) -> StepPlanned:
        return self._plan_operators_command("build", self.settings.build)

    async def _test(self) -> AsyncIterator[Event]:
        if self.request.options.skip_tests:
            yield StepSkipped("test", "skipped (--skip-tests: emergency deployment)")
            return
        if self.pinned is not None:
            yield StepSkipped("test", "tested before the approval")
            return
        if self.ci_run is not None:
            yield StepSkipped("test", f"tested by CI: run {self.ci_run.id} passed")
            return
        async for event in self._operators_command("test", self.settings.test):
            yield event

    async def _plan_test(self) -> StepPlanned:
        if self.request.options.skip_tests:
            return StepPlanned("test", (), "skipped (--skip-tests)")
        return self._plan_operators_command("test", self.settings.test)

    async def _package(self) -> AsyncIterator[Event]:
        if self.pinned is not None:
            async for event in self._approved_package(self.pinned):
                yield event
            return
        if self.ci_run is not None and self.package is not None:
            package, run = self.package, self.ci_run
            yield StepDone(
                "package",
                detail=(
                    f"{package.path.name} ({human_size(package.size)}) from CI run {run.id}'s "
                    f"artifact {self.settings.ci_artifact}, sha256 {package.sha256[:12]}…"
                ),
            )
            return
        assert self.version is not None and self.workspace is not None
        clocked = Clocked()
        yield StepStarted("package")
        if self.package_dir is None:
            self.package_dir = Path(tempfile.mkdtemp(prefix="package-", dir=self.workspaces))
        workdir, version, out = self.workspace.path, self.version, self.package_dir

        def make() -> Package:
            return build_package(version, find_artifacts(workdir, self.settings.artifacts), out)

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

    async def _approved_package(self, pinned: PinnedPackage) -> AsyncIterator[Event]:
        """The approved package, exactly: refused when the file is gone or has changed."""
        clocked = Clocked()
        yield StepStarted("package", detail="checking the approved package")
        problem = await asyncio.to_thread(pinned_problem, pinned)
        if problem is not None:
            raise StepError(StepFailed("package", "", clocked.seconds, problem))
        self.package = Package(pinned.path, pinned.version, pinned.size, pinned.sha256, ())
        yield StepDone(
            "package",
            seconds=clocked.seconds,
            detail=f"the approved {pinned.path.name}, sha256 {pinned.sha256[:12]}… unchanged",
        )

    async def _plan_package(self) -> StepPlanned:
        assert self.version is not None
        return StepPlanned(
            "package",
            (
                f"bot: tar {' '.join(self.settings.artifacts)} as bin/* "
                f"→ {releases.package_name(self.version)}",
            ),
            "MANIFEST (sha256 of each file) and VERSION go in too",
        )


def pinned_problem(pinned: PinnedPackage) -> str | None:
    """Why the approved package cannot be deployed as approved (None: it can)."""
    again = "nothing was deployed; ask for approval again"
    try:
        digest = hashlib.sha256()
        with pinned.path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return f"the approved package {pinned.path} is gone ({exc.strerror}): {again}"
    found = digest.hexdigest()
    if found != pinned.sha256:
        return (
            f"the approved package {pinned.path} has changed since the approval (sha256 "
            f"{found[:12]}…, approved {pinned.sha256[:12]}…): {again}"
        )
    return None
