"""The diagnosis's Restart service: the environment's service command on each host, then the
runbook's health verification — the restart step of a deploy, without a switch.

    lock → one host at a time: `deploy.restart` → /healthz passes 3 times in a row → unlock

One host at a time, as a deploy restarts: the others keep serving while one comes back, and a
host whose service does not come back stops the run there (the rest are not touched).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.runbook.changes.activate import (
    PASSES_NEEDED,
    Activator,
    Clocked,
    human_duration,
    one_line,
    short,
)
from bot.runbook.changes.procedure import OpenHosts, locked, unlocked
from bot.runbook.changes.progress import Event, Finished, Outcome, StepDone, StepFailed, StepStarted
from bot.runbook.health.probe import Prober
from bot.transport.base import Shell, Transport, TransportError

# A restart's checklist, as its message shows it ("restart" is titled as a deploy's).
STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("restart", "Restart and verify"),
    ("unlock", "Unlock"),
)


def restart_title(environment: str) -> str:
    return f"Restart the service on {environment}"


def steps_to_run() -> list[str]:
    """What an approver approves."""
    return [title for key, title in STEPS if key not in ("lock", "unlock")]


class Restart:
    """Restart the service on every host of env, one at a time, each verified healthy."""

    def __init__(
        self,
        env: Environment,
        config: Config,
        *,
        prober: Prober,
        open_hosts: OpenHosts,
        clock: Clock = utc_now,
        secrets: Iterable[str] = (),
    ) -> None:
        self.env = env
        self.open_hosts = open_hosts
        self.activator = Activator(env, config, prober, clock=clock, secrets=secrets)
        self.done: list[str] = []

    async def run(self) -> AsyncIterator[Event]:
        clocked = Clocked()
        name = self.env.name
        yield locked(name, "restart")
        async with self.open_hosts(self.env) as hosts:
            for host in hosts:
                yield StepStarted("restart", host.target, f"`{short(self.env.deploy.restart)}`")
                step_clock = Clocked()
                failure = await self._restart(host, step_clock)
                if failure is not None:
                    yield failure
                    yield unlocked(name)
                    yield Finished(self._failed(failure, clocked.seconds))
                    return
                self.done.append(host.target)
                yield StepDone(
                    "restart",
                    host.target,
                    step_clock.seconds,
                    f"restarted; healthy ({PASSES_NEEDED} passes in a row)",
                )
        yield unlocked(name)
        count = len(self.done)
        summary = (
            f"Restarted the service on {name}: {count} host{'s' if count != 1 else ''}, healthy."
        )
        yield Finished(Outcome("succeeded", summary, seconds=clocked.seconds))

    async def _restart(self, host: Transport, clocked: Clocked) -> StepFailed | None:
        """The service command, then /healthz until it passes; the failure, or None."""
        command = self.env.deploy.restart
        try:
            restarted = await host.run(Shell(command))
        except TransportError as exc:
            return StepFailed("restart", host.target, clocked.seconds, one_line(exc))
        if not restarted.ok:
            return StepFailed(
                "restart",
                host.target,
                clocked.seconds,
                f"`{short(command)}` exited with status {restarted.exit_status}",
                self.activator.output(restarted),
            )
        verdict = await self.activator.verify(expect=None)
        if verdict.ok:
            return None
        timeout = human_duration(self.env.deploy.verify_timeout.total_seconds())
        return StepFailed(
            "restart",
            host.target,
            clocked.seconds,
            f"failed its health check after the restart: {verdict.reason} (no "
            f"{PASSES_NEEDED} passes in a row within verify_timeout {timeout})",
        )

    def _failed(self, failure: StepFailed, seconds: float) -> Outcome:
        summary = f"Restart of {self.env.name} failed on {failure.host}: {failure.error}"
        if self.done:
            summary += f" ({', '.join(self.done)} restarted and healthy before it)"
        return Outcome.of("failed", summary + ".", failure, seconds=seconds)
