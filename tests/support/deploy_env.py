"""Deploy targets for tests: a demo EventMesh service installed and restarted for real.

Each environment gets its own install_dir, backup_dir, build workdir and service port. Its
`restart` runs the demo supervisor (bot/demo/supervise.py) with this interpreter, so the
service is started from `<install_dir>/bin/eventmesh-api` — the installed release — and its
/healthz reports the version that release was built with. The same commands run through the
local transport or over SSH on the loopback sshd.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import stat
import subprocess
import sys
import tarfile
import tempfile
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bot.config import Config, Environment
from bot.runbook.changes.deploy import Deploy
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest
from bot.runbook.changes.progress import Event, Finished, Outcome, StepDone, StepSkipped
from bot.runbook.changes.releases import backup_name
from bot.runbook.changes.rollback import Rollback
from bot.runbook.changes.rollback_plan import Named, RollbackPlan, RollbackRefused, plan_rollback
from bot.runbook.health.probe import Prober
from bot.transport import LocalTransport, Transport, open_transports
from tests.conftest import free_port

PYTHON = shlex.quote(sys.executable)


@dataclass
class DemoTarget:
    """One environment's files and service on this machine."""

    name: str
    root: Path
    port: int

    @property
    def install_dir(self) -> Path:
        return self.root / "install"

    @property
    def backup_dir(self) -> Path:
        return self.root / "backups"

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def state_file(self) -> Path:
        return self.root / "service.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def supervise(self, action: str) -> str:
        command = (
            f"{PYTHON} -m bot.demo.supervise {action} --state {shlex.quote(str(self.state_file))}"
        )
        if action in ("start", "restart"):
            command += f" --install-dir {shlex.quote(str(self.install_dir))} --port {self.port}"
        return command

    def environment(self, **overrides: Any) -> dict[str, Any]:
        """The environment's entry for a config file."""
        # Relative to where the deploy builds: its own workspace, a copy of workdir.
        build_dir = "build"
        env: dict[str, Any] = {
            "base_url": self.url,
            "transport": "local",
            "workdir": str(self.workdir),
            "build": f"{PYTHON} -m bot.demo.release build --out {build_dir}",
            "test": f"{PYTHON} -m bot.demo.release test {build_dir}/eventmesh-api",
            "version": "echo 9.9.9",
            "artifacts": ["build/eventmesh-api"],
            "install_dir": str(self.install_dir),
            "backup_dir": str(self.backup_dir),
            "start": self.supervise("start"),
            "stop": self.supervise("stop"),
            "restart": self.supervise("restart"),
            "verify_interval": "1s",
            "verify_timeout": "10s",
            "check_interval": "1s",
            "watch_for": "2s",
            "keep_releases": 3,
            "keep_backups": 2,
        }
        env.update(overrides)
        return env

    def stop(self) -> None:
        subprocess.run(shlex.split(self.supervise("stop")), check=False, capture_output=True)

    def current_files(self) -> dict[str, str]:
        """What <install_dir>/bin holds, through the links, as {name: content}."""
        bin_dir = self.install_dir / "bin"
        return {p.name: p.read_text() for p in sorted(bin_dir.iterdir())}


def demo_target(root: Path, name: str) -> DemoTarget:
    target = DemoTarget(name, root / name, free_port())
    target.workdir.mkdir(parents=True, exist_ok=True)
    return target


def tree_digest(*roots: Path) -> dict[str, str]:
    """Every entry under roots: type, mode, link target or content hash, mtime — byte for byte."""
    entries: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            entries[str(root)] = "absent"
            continue
        for path in sorted([root, *root.rglob("*")]):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                what = f"link {os.readlink(path)}"
            elif stat.S_ISDIR(info.st_mode):
                what = "dir"
            else:
                what = f"file {hashlib.sha256(path.read_bytes()).hexdigest()}"
            entries[str(path)] = f"{what} mode={oct(info.st_mode)} mtime={info.st_mtime_ns}"
    return entries


def hand_made_install(target: DemoTarget, version: str) -> None:
    """An install_dir laid out by hand, as the runbook's scp into bin/ leaves it."""
    from bot.demo.release import build

    bin_dir = target.install_dir / "bin"
    build(bin_dir, version)


def run_deploy(
    config: Config,
    name: str,
    version: str | None,
    options: DeployOptions | None = None,
    cancel_before: str | None = None,
) -> tuple[list[Event], Outcome]:
    async def go() -> list[Event]:
        events: list[Event] = []
        async with httpx.AsyncClient() as http:
            prober = Prober()
            prober.start()  # stopped below, after the procedure's last event
            procedure = Deploy(
                DeployRequest(
                    config.environments[name], version, options or DeployOptions(), "U0DEPLOY1"
                ),
                config,
                http=http,
                prober=prober,
                open_hosts=lambda env: open_transports(env, config.ssh),
                local=LocalTransport(),
            )
            if cancel_before is not None:

                async def cancelled() -> str | None:
                    done = {e.step for e in events if isinstance(e, StepDone | StepSkipped)}
                    return "U0APPROVER1" if cancel_before in done else None

                procedure.cancel_requested = cancelled
            try:
                async for event in procedure.run():
                    events.append(event)
            finally:
                prober.close()
        return events

    events = asyncio.run(go())
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and events[-1] is finished[0], events
    return events, finished[0].outcome


def run_rollback(
    config: Config, name: str, choice: Named | None = None, user: str = "U0DEPLOY1"
) -> tuple[RollbackPlan | RollbackRefused, list[Event], Outcome | None]:
    """Plan a rollback as /rollback does and, when there is a plan, run it to its end."""
    env = config.environments[name]

    def hosts(environment: Environment) -> AbstractAsyncContextManager[list[Transport]]:
        return open_transports(environment, config.ssh)

    async def go() -> tuple[RollbackPlan | RollbackRefused, list[Event]]:
        planned = await plan_rollback(env, hosts, choice)
        events: list[Event] = []
        if isinstance(planned, RollbackRefused):
            return planned, events
        prober = Prober()
        prober.start()
        try:
            procedure = Rollback(
                planned, env, config, prober=prober, open_hosts=hosts, requested_by=user
            )
            async for event in procedure.run():
                events.append(event)
        finally:
            prober.close()
        return planned, events

    planned, events = asyncio.run(go())
    finished = [e for e in events if isinstance(e, Finished)]
    if isinstance(planned, RollbackRefused):
        return planned, events, None
    assert len(finished) == 1 and events[-1] is finished[0], events
    return planned, events, finished[0].outcome


def backup_archive(target: DemoTarget, version: str, at: datetime) -> Path:
    """A backup archive in target's backup_dir as /deploy's backup step leaves one
    (./bin/eventmesh-api, MANIFEST, VERSION) — here of a release that was never deployed."""
    from bot.demo.release import build

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        launcher = build(tree / "bin", version)
        digest = hashlib.sha256(launcher.read_bytes()).hexdigest()
        (tree / "MANIFEST").write_text(f"{digest}  bin/{launcher.name}\n")
        (tree / "VERSION").write_text(f"{version}\n")
        target.backup_dir.mkdir(parents=True, exist_ok=True)
        path = target.backup_dir / backup_name(target.name, at)
        with tarfile.open(path, "w:gz") as archive:
            archive.add(tree, arcname=".")
    return path


def install_release(config: Config, name: str, version: str) -> str:
    """A release of the demo service installed and made current on every host of `name` the
    way /deploy's install and switch leave it (package, MANIFEST, release log) — without the
    restart: for tests that need releases to roll back between, not a running deploy."""
    from bot.demo.release import build
    from bot.runbook.changes import releases
    from bot.runbook.changes.packaging import build_package

    env = config.environments[name]
    layout = releases.Layout.of(env)
    now = datetime.now(UTC)
    release_id = releases.new_release_id(now, version)

    async def go() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            package = build_package(version, [build(work / "build", version)], work)
            remote = layout.package_path(version)
            async with open_transports(env, config.ssh) as hosts:
                for host in hosts:
                    await releases.run_checked(host, [["mkdir", "-p", layout.path("packages")]])
                    await host.upload(package.path, remote)
                    await releases.run_checked(host, layout.unpack_commands(release_id, remote))
                    event = releases.log_event("installed", release_id, now, version=version)
                    await releases.run_checked(host, [layout.log_command(event)])
                    await releases.switch(host, layout, release_id, now)
                    good = releases.log_event("good", release_id, now)
                    await releases.run_checked(host, [layout.log_command(good)])

    asyncio.run(go())
    return release_id
