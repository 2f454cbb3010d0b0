"""After a crash: what a deploy or rollback cut short left on its hosts, read from the hosts and
put right where it can be (bot/slack/changes/recovery.py runs it under the run's own lock).

Every on-host change is atomic or recoverable from what the host shows (releases.py), so one
look at each host says what to do:

- first, what any run cut short leaves is tidied (releases.tidy: `bin` relinked, `.partial-*`,
  `.upload-*`, half-written backups removed);
- a deploy's host switched to the new release and never marked good (killed right after the
  switch, during verify, smoke or record): verified now; healthy → marked good; not healthy →
  with auto_rollback, back to the release it ran before (restart, verify; the new one marked
  bad), as a failed deploy would; without it, left for a person;
- a host where the service may have been stopped or restarted (the interrupted step was the
  deploy's restart or automatic rollback, or a rollback's stop, switch, start, verify or
  restore): checked; down → restarted on what is current and verified;
- what fails all that is not repaired: the caller opens an incident naming those hosts.

Nothing that already ran is run again: no build, no upload, no second switch to the new
release; only the checks, and the restart a stopped service needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.runbook.changes import leftovers, releases
from bot.runbook.changes.activate import Activator, one_line, show_version
from bot.runbook.changes.procedure import OpenHosts
from bot.runbook.changes.releases import HostState, Layout, Release, RemoteCommandFailed
from bot.runbook.health.probe import Prober
from bot.transport.base import Transport, TransportError

log = logging.getLogger(__name__)

# The steps during which a change touches its hosts; cut short elsewhere, the hosts are as
# they were.
ON_HOSTS = {
    "deploy": {"hosts", "backup", "upload", "install", "restart", "smoke", "record", "rollback"},
    "rollback": {"hosts", "restore", "files", "stop", "switch", "start", "verify"},
    "backup": {"backup"},
}
# Of those, the ones during which the service may have been stopped or restarted.
SERVICE_STEPS = {
    "deploy": {"restart", "rollback"},
    "rollback": {"stop", "switch", "start", "verify", "restore", "files"},
}


@dataclass(frozen=True)
class HostRepair:
    """One host after the look: what it showed and what was done; `repaired` False when it
    is still not right (an incident names it)."""

    host: str
    said: str
    repaired: bool = True


@dataclass(frozen=True)
class Interrupted:
    """What the record of the run cut short says: its kind, the step it was in, the version a
    deploy installed, and per host what it knew (deployments.hosts)."""

    kind: str
    step: str
    version: str | None
    hosts: Mapping[str, Mapping[str, object]]


def needs_a_look(run: Interrupted) -> bool:
    return run.step in ON_HOSTS.get(run.kind, set())


class HostRepairer:
    def __init__(
        self,
        env: Environment,
        config: Config,
        *,
        prober: Prober,
        open_hosts: OpenHosts,
        clock: Clock = utc_now,
    ) -> None:
        self.env = env
        self.layout = Layout.of(env)
        self.open_hosts = open_hosts
        self.clock = clock
        self.activator = Activator(env, config, prober, clock=clock)

    async def repair(self, run: Interrupted) -> list[HostRepair]:
        """Every host of the environment, one at a time (as the run went)."""
        done: list[HostRepair] = []
        try:
            async with self.open_hosts(self.env) as hosts:
                for host in hosts:
                    done.append(await self._one(host, run, single=len(hosts) == 1))
        except (TransportError, OSError) as exc:
            reached = {d.host for d in done}
            for target in [str(h) for h in self.env.hosts] or ["local"]:
                if target not in reached:
                    done.append(HostRepair(target, f"not reached: {one_line(exc)}", False))
        return done

    async def _one(self, host: Transport, run: Interrupted, *, single: bool) -> HostRepair:
        try:
            tidied = await leftovers.tidy(host, self.layout)
            state, _ = await releases.inspect(host, self.layout)
            repair = await self._decide(host, run, state, single=single)
        except (TransportError, RemoteCommandFailed) as exc:
            return HostRepair(host.target, f"could not be read or repaired: {one_line(exc)}", False)
        if tidied:
            repair = HostRepair(
                repair.host,
                f"{repair.said}; removed what was left ({'; '.join(tidied)})",
                repair.repaired,
            )
        return repair

    async def _decide(
        self, host: Transport, run: Interrupted, state: HostState, *, single: bool
    ) -> HostRepair:
        current = state.current_release
        known = run.hosts.get(host.target, {})
        if run.kind == "deploy" and current is not None and _unverified_new(current, run, known):
            return await self._verify_new(host, run, state, current, known, single=single)
        if run.step in SERVICE_STEPS.get(run.kind, set()):
            return await self._running(host, state)
        what = show_version(current.version) if current and current.version else "as it was"
        return HostRepair(host.target, f"untouched: runs {what}")

    async def _verify_new(
        self,
        host: Transport,
        run: Interrupted,
        state: HostState,
        new: Release,
        known: Mapping[str, object],
        *,
        single: bool,
    ) -> HostRepair:
        """Switched to the deploy's release and never verified: verify now; else roll back."""
        version = run.version
        verdict = await self.activator.verify(expect=version if single else None, accept=(version,))
        if verdict.ok:
            await self._log(host, "good", new.id)
            return HostRepair(
                host.target,
                f"was switched to {show_version(version)} and not verified: verified now, "
                "healthy (marked good)",
            )
        if not self.env.deploy.auto_rollback:
            return HostRepair(
                host.target,
                f"runs {show_version(version)}, which fails its health check "
                f"({verdict.reason}); auto_rollback is off",
                False,
            )
        previous = _previous(state, new, known)
        if previous is None:
            return HostRepair(
                host.target,
                f"runs {show_version(version)}, which fails its health check "
                f"({verdict.reason}), and has no earlier release to go back to",
                False,
            )
        back = previous.version
        problem = await self.activator.activate(
            host, previous.id, expect=back if single else None, accept=(back,), step="repair"
        )
        reason = f"{show_version(version)} failed its health check after a restart of the bot"
        await self._log(host, "bad", new.id, reason=reason)
        if problem is not None:
            return HostRepair(
                host.target,
                f"{show_version(version)} fails its health check ({verdict.reason}); going "
                f"back to {previous.id} failed too: {problem.error}",
                False,
            )
        return HostRepair(
            host.target,
            f"was switched to {show_version(version)}, which fails its health check "
            f"({verdict.reason}): rolled back to {_shown(previous)}, healthy",
        )

    async def _running(self, host: Transport, state: HostState) -> HostRepair:
        """The service may have been left stopped: check it; down → restart, verify."""
        current = state.current_release
        if current is None:
            return HostRepair(host.target, "nothing current on the host to start", False)
        version = current.version
        verdict = await self.activator.verify(expect=version)
        if verdict.ok:
            return HostRepair(host.target, f"running {_shown(current)}, healthy")
        problem = await self.activator.activate(
            host, current.id, expect=version, accept=(version,), step="repair"
        )
        if problem is not None:
            return HostRepair(
                host.target,
                f"the service was down ({verdict.reason}) and did not come back on "
                f"{_shown(current)}: {problem.error}",
                False,
            )
        return HostRepair(
            host.target,
            f"the service was down ({verdict.reason}): started on {_shown(current)}, healthy",
        )

    async def _log(self, host: Transport, kind: str, release_id: str, **fields: object) -> None:
        event = releases.log_event(kind, release_id, self.clock(), **fields)
        await releases.run_checked(host, [self.layout.log_command(event)])


def _unverified_new(current: Release, run: Interrupted, known: Mapping[str, object]) -> bool:
    """Whether the host runs the deploy's own release, never marked good."""
    if current.status == "good":
        return False
    recorded = known.get("release")
    if isinstance(recorded, str):
        return current.id == recorded
    return run.version is not None and current.version == run.version


def _previous(state: HostState, new: Release, known: Mapping[str, object]) -> Release | None:
    recorded = known.get("previous")
    if isinstance(recorded, str) and state.release(recorded) is not None:
        return state.release(recorded)
    return state.previous_good(excluding=[new.id])


def _shown(release: Release) -> str:
    return show_version(release.version) if release.version else f"release {release.id}"


def hosts_named(repairs: Sequence[HostRepair]) -> list[str]:
    return [r.host for r in repairs if not r.repaired]
