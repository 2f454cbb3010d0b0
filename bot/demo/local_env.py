"""The embedded default's `local` environment: a demo service run from an installed release.

`local` exists only in the console (or where a config writes it): the console adds it with
`demo_environment` when the config has none, its files under the console's data directory.
When `local`'s `start` command is the demo supervisor (`python -m bot.demo.supervise`, as in
config/eventmesh.yml), the console:
- installs the package's own demo release as the first release if nothing is installed yet
  (the same release layout /deploy uses, through the local transport),
- starts the service with the config's `start` command and waits until it answers,
- points `local`'s base_url at it, and stops it with the `stop` command on the way out.
/deploy local then builds, installs and restarts new releases for real.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from bot import __version__
from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.demo import release, supervise
from bot.runbook.changes import releases
from bot.runbook.changes.packaging import build_package
from bot.runbook.changes.releases import Layout
from bot.transport.base import Shell, Transport

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 20.0
SUPERVISOR = "bot.demo.supervise"
DEMO_NAME = "local"
DEMO_PORT = 8080  # the supervisor takes another when it is busy


def demo_environment(config: Config, state_dir: Path) -> Environment:
    """The console's `local`: the demo service, deployed for real by the local transport.

    Its builds, releases, backups, log and supervisor state live in `state_dir` (the console's
    data directory's `local/`), so `--reset` starts it afresh. `build` stamps a small launcher
    of the demo service with the version; a version ending in -broken builds a release that
    starts unhealthy (the auto-rollback demo). /health local diagnose finds the service's
    process by its log file, which tells it from other demo services on the machine."""

    def at(*parts: str) -> str:
        path = str(state_dir.joinpath(*parts))
        return path if state_dir.is_absolute() else f"./{path}"

    q = shlex.quote
    launcher, log_file, state = (
        at("build", "eventmesh-api"),
        at("log", "api.log"),
        at("service.json"),
    )
    service = (
        f"--install-dir {q(at('eventmesh'))} --state {q(state)} --port {DEMO_PORT} "
        f"--log-file {q(log_file)}"
    )
    deploy = config.deploy.model_copy(
        update={
            "workdir": Path("."),
            "build": f"python -m bot.demo.release build --out {q(at('build'))}",
            "test": f"python -m bot.demo.release test {q(launcher)}",
            "version": "python -m bot.demo.release version",
            "artifacts": [launcher],
            "install_dir": at("eventmesh"),
            "backup_dir": at("backups"),
            "start": f"python -m {SUPERVISOR} start {service}",
            "stop": f"python -m {SUPERVISOR} stop --state {q(state)}",
            "restart": f"python -m {SUPERVISOR} restart {service}",
            "process": f"--log-file {log_file}",
            "log_file": log_file,
            "verify_interval": timedelta(seconds=1),
            "verify_timeout": timedelta(seconds=15),
            "watch_for": timedelta(minutes=1),
            "smoke": None,
            "env": {},
        }
    )
    return Environment(
        name=DEMO_NAME,
        base_url=f"http://127.0.0.1:{DEMO_PORT}",  # pointed at the service once it runs
        transport="local",
        check_interval=timedelta(seconds=30),
        deploy=deploy,
    )


class LocalServiceError(Exception):
    """The local demo service could not be installed or started; str() says what to fix."""


@dataclass(frozen=True)
class Supervised:
    state_file: Path
    install_dir: Path | None


def supervised(env: Environment) -> Supervised | None:
    """The supervisor's files when env's `start` runs it; None for any other service."""
    try:
        words = shlex.split(env.deploy.start)
    except ValueError:
        return None
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == SUPERVISOR:
            parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
            parser.add_argument("action")
            parser.add_argument("--state", type=Path)
            parser.add_argument("--install-dir", type=Path)
            parser.add_argument("--host")
            parser.add_argument("--port")
            try:
                args, _ = parser.parse_known_args(words[i + 2 :])
            except argparse.ArgumentError:
                return None
            if args.state is None:
                return None
            return Supervised(args.state, args.install_dir)
    return None


async def install_first_release(
    env: Environment, host: Transport, clock: Clock = utc_now
) -> str | None:
    """Install the package's own demo release when nothing is installed; its release id."""
    layout = Layout.of(env)
    state, _ = await releases.inspect(host, layout)
    if state.has_deployment:
        return None
    version = __version__
    with tempfile.TemporaryDirectory(prefix="eventmesh-first-release-") as tmp:
        work = Path(tmp)
        launcher = await asyncio.to_thread(release.build, work / "build", version)
        package = await asyncio.to_thread(build_package, version, [launcher], work)
        remote = layout.package_path(version)
        await host.upload(package.path, remote, sha256=package.sha256)
        now = clock()
        release_id = releases.new_release_id(now, version)
        await releases.run_checked(host, layout.unpack_commands(release_id, remote))
        installed = releases.log_event(
            "installed",
            release_id,
            now,
            version=version,
            by="eventmesh-bot",
            note="the package's own demo release, installed by the console",
        )
        await releases.run_checked(host, [layout.log_command(installed)])
        await releases.switch(host, layout, release_id, now)
        good = releases.log_event("good", release_id, now)
        await releases.run_checked(host, [layout.log_command(good)])
    return release_id


async def start_local_service(env: Environment, host: Transport, http: httpx.AsyncClient) -> str:
    """Install if needed, start with env's `start` command, wait until it answers; its URL."""
    files = supervised(env)
    if files is None:
        raise LocalServiceError(f"{env.name}'s start command does not run {SUPERVISOR}")
    first = await install_first_release(env, host)
    if first is not None:
        log.info("installed the first release of %s: %s", env.name, first)
    started = await host.run(Shell(env.deploy.start))
    if not started.ok:
        raise LocalServiceError(
            f"`{env.deploy.start}` exited with status {started.exit_status}: "
            f"{started.tail(3) or 'no output'}"
        )
    state = supervise.ServiceState.read(files.state_file)
    if state.url is None:
        raise LocalServiceError(f"{files.state_file} does not say which port the service took")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if (await http.get(f"{state.url}/healthz", timeout=2)).status_code in (200, 503):
                return state.url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise LocalServiceError(
                f"the demo service did not answer on {state.url} within {READY_TIMEOUT_S:.0f}s "
                f"(its output is in {files.state_file.with_suffix('.log')})"
            )
        await asyncio.sleep(0.1)  # waiting for the port to answer, not for a time


async def stop_local_service(env: Environment, host: Transport) -> None:
    result = await host.run(Shell(env.deploy.stop))
    if not result.ok:
        log.warning(
            "`%s` exited with status %d: %s", env.deploy.stop, result.exit_status, result.tail(3)
        )


def console_config(config: Config, state_dir: Path, *, shipped: bool) -> Config:
    """The config the console runs: `local` added when the config has none (its files in
    state_dir), and, with the shipped config (`shipped`), no pages for the other
    environments: nothing in the console can reach them, by design, so their alerts are
    shown (in the summary line) but wake nobody."""
    environments = dict(config.environments)
    if shipped:
        environments = {
            name: env.model_copy(update={"page_on_critical": False})
            for name, env in environments.items()
        }
    if DEMO_NAME not in environments:  # first: /health all lists the one that answers first
        environments = {DEMO_NAME: demo_environment(config, state_dir), **environments}
    return config.model_copy(update={"environments": environments})
