"""Undo one deployment: the Roll back button offered when the post-deploy watch sees a failure.

Each host the deployment switched goes back to the release it ran before (or the deploy's
backup where it had none), one host at a time, restarted and verified; the deployed release
is marked bad in the host's release log, so no later rollback lands on it. A host that no
longer runs the deployed release (someone deployed since) is left alone and said so: that
is /rollback's business.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.runbook import releases
from bot.runbook.activate import Activator, Clocked, one_line, show_version
from bot.runbook.deploy import OpenHosts
from bot.runbook.probe import Prober
from bot.runbook.progress import (
    Event,
    Finished,
    Outcome,
    StepDone,
    StepFailed,
    StepStarted,
)
from bot.runbook.releases import Layout, RemoteCommandFailed
from bot.store import Deployment
from bot.transport.base import TransportError


class Revert:
    def __init__(
        self,
        deployment: Deployment,
        env: Environment,
        config: Config,
        *,
        prober: Prober,
        open_hosts: OpenHosts,
        requested_by: str,
        clock: Clock = utc_now,
    ) -> None:
        self.deployment = deployment
        self.env = env
        self.layout = Layout.of(env)
        self.open_hosts = open_hosts
        self.requested_by = requested_by
        self.clock = clock
        self.activator = Activator(env, config, prober, clock=clock)

    async def run(self) -> AsyncIterator[Event]:
        deployed = self.deployment
        what = show_version(deployed.version)
        yield StepDone("lock", detail=f"{self.env.name} is locked for this rollback")
        clocked_all = Clocked()
        back: list[str] = []
        stuck: list[StepFailed] = []
        previous_versions: set[str | None] = set()
        async with self.open_hosts(self.env) as hosts:
            changed = [h for h in hosts if deployed.hosts.get(h.target, {}).get("changed")]
            for index, host in enumerate(changed):
                info = deployed.hosts[host.target]
                release_id = str(info.get("release") or "")
                previous = info.get("previous")
                previous_version = info.get("previous_version")
                previous_versions.add(str(previous_version) if previous_version else None)
                last = index == len(changed) - 1
                clocked = Clocked()
                yield StepStarted("rollback", host.target)
                try:
                    state, _ = await releases.inspect(host, self.layout)
                    if state.current != release_id:
                        now = state.current or "no release"
                        stuck.append(
                            StepFailed(
                                "rollback",
                                host.target,
                                clocked.seconds,
                                f"it runs {now} now, not {release_id} from this deploy: left "
                                f"alone (use /rollback {self.env.name})",
                            )
                        )
                        yield stuck[-1]
                        continue
                    if isinstance(previous, str) and previous:
                        target = previous
                    elif info.get("backup"):
                        backup = str(info["backup"])
                        target = await releases.restore(host, self.layout, backup, self.clock())
                    else:
                        stuck.append(
                            StepFailed(
                                "rollback",
                                host.target,
                                clocked.seconds,
                                "nothing to roll back to: no earlier release and no backup",
                            )
                        )
                        yield stuck[-1]
                        continue
                except (TransportError, RemoteCommandFailed) as exc:
                    stuck.append(
                        StepFailed("rollback", host.target, clocked.seconds, one_line(exc))
                    )
                    yield stuck[-1]
                    continue
                expected = str(previous_version) if previous_version else None
                problem = await self.activator.activate(
                    host,
                    target,
                    expect=expected if last else None,
                    accept=(expected, deployed.version),
                    step="rollback",
                    clocked=clocked,
                )
                if problem is not None:
                    stuck.append(problem)
                    yield problem
                    continue
                back.append(host.target)
                shown_as = show_version(expected) if expected else target
                yield StepDone("rollback", host.target, clocked.seconds, f"back on {shown_as}")
                bad = releases.log_event(
                    "bad",
                    release_id,
                    self.clock(),
                    reason=f"rolled back by {self.requested_by} after the post-deploy watch",
                )
                # The switch is what matters; if this fails the host's log misses one verdict.
                with contextlib.suppress(TransportError, RemoteCommandFailed):
                    await releases.run_checked(host, [self.layout.log_command(bad)])
        known = previous_versions - {None}
        back_to = show_version(known.pop()) if len(known) == 1 else "the previous release"
        if not stuck:
            yield StepDone("unlock", detail=f"{self.env.name} is free again")
            summary = f"Rolled back {self.env.name} from {what} to {back_to}."
            yield Finished(
                Outcome("rolled_back", summary, deployed.version, seconds=clocked_all.seconds)
            )
            return
        detail = "; ".join(f.error for f in stuck)
        summary = f"Rollback of {self.env.name} from {what} did not complete: {detail}"
        first = stuck[0]
        yield Finished(
            Outcome(
                "rollback_failed",
                summary,
                deployed.version,
                failed_step="rollback",
                failed_host=first.host,
                error=first.error,
                output=first.output,
                seconds=clocked_all.seconds,
            )
        )
