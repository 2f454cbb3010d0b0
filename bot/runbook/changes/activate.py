"""Make a release the one a host runs: switch `current`, restart, verify — deploy and rollback.

`systemctl restart` returns before the service is ready, so the restart's exit status proves
nothing: the service is verified by polling `base_url/healthz` until it passes 3 times in a
row (HTTP 200, status healthy, and the expected version when the service reports one) or
`verify_timeout` runs out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.process import kill_point
from bot.runbook.changes import releases
from bot.runbook.changes.progress import StepFailed, shown_output
from bot.runbook.changes.releases import Layout, RemoteCommandFailed
from bot.runbook.health.probe import Prober
from bot.transport.base import CommandResult, Shell, Transport, TransportError

PASSES_NEEDED = 3


def show_version(version: str | None) -> str:
    if not version:
        return "an unknown version"
    return version if version[:1] in "vV" else f"v{version}"


def reports_other_version(reported: str | None, expected: str | None) -> str | None:
    """Why a service is not on the version it should be ('it reports v1.4.1, not v1.4.2'), or
    None when it is, or when either is unknown. The one wording of that rule, wherever a
    check compares (verifying a switch, the checks after a change)."""
    if reported is None or expected is None or reported == expected:
        return None
    return f"it reports {show_version(reported)}, not {show_version(expected)}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def short(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def human_duration(seconds: float) -> str:
    if seconds < 60:
        if seconds < 10 and seconds != int(seconds):
            return f"{seconds:.1f}s"
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@dataclass
class Clocked:
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    version: str | None = None


def judge(
    status: int | None,
    body: str,
    error: str | None,
    expect: str | None,
    accept: Iterable[str | None] = (),
) -> Verdict:
    """One /healthz answer: does it count as a pass?"""
    if error is not None:
        return Verdict(False, f"healthz: {error}")
    if status != 200:
        return Verdict(False, f"healthz answered HTTP {status}")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return Verdict(False, "healthz did not return a JSON object")
    state = str(payload.get("status", "")).lower()
    if state != "healthy":
        return Verdict(False, f"the service reports status '{state or 'missing'}'")
    reported = payload.get("version")
    if reported is None:
        return Verdict(True, "healthy")
    version = str(reported)
    other = reports_other_version(version, expect)
    if other is not None:
        return Verdict(False, other, version)
    # None among the accepted means a version nobody knows (a hand-made install): any will do.
    accepted = set(accept)
    if expect is None and accepted and None not in accepted and version not in accepted:
        return Verdict(False, f"it reports {show_version(version)}", version)
    return Verdict(True, "healthy", version)


class Activator:
    """Switches hosts of one environment between releases and proves the service came back."""

    def __init__(
        self,
        env: Environment,
        config: Config,
        prober: Prober,
        *,
        clock: Clock = utc_now,
        secrets: Iterable[str] = (),
    ) -> None:
        self.env = env
        self.config = config
        self.settings = env.deploy
        self.layout = Layout.of(env)
        self.prober = prober
        self.clock = clock
        self.secrets = tuple(secrets)

    def output(self, result: CommandResult) -> str:
        """The last lines of a command's output, as they may be shown (secrets redacted)."""
        return shown_output(result, self.secrets)

    async def activate(
        self,
        host: Transport,
        release_id: str,
        *,
        expect: str | None,
        accept: Iterable[str | None] = (),
        step: str,
        clocked: Clocked | None = None,
    ) -> StepFailed | None:
        """Switch host to release_id, run the restart command, verify. None when it passed."""
        clocked = clocked or Clocked()
        try:
            await releases.switch(host, self.layout, release_id, self.clock())
            kill_point("switched")
            restarted = await host.run(Shell(self.settings.restart))
        except RemoteCommandFailed as exc:
            return StepFailed(
                step, host.target, clocked.seconds, one_line(exc), self.output(exc.result)
            )
        except TransportError as exc:
            return StepFailed(step, host.target, clocked.seconds, one_line(exc))
        if not restarted.ok:
            return StepFailed(
                step,
                host.target,
                clocked.seconds,
                f"`{short(self.settings.restart)}` exited with status {restarted.exit_status}",
                self.output(restarted),
            )
        verdict = await self.verify(expect=expect, accept=accept)
        if not verdict.ok:
            timeout = human_duration(self.settings.verify_timeout.total_seconds())
            return StepFailed(
                step,
                host.target,
                clocked.seconds,
                f"failed its health check on host {host.target}: {verdict.reason} "
                f"(no {PASSES_NEEDED} passes in a row within verify_timeout {timeout})",
            )
        return None

    async def verify(self, *, expect: str | None, accept: Iterable[str | None] = ()) -> Verdict:
        """Poll /healthz until it passes PASSES_NEEDED times in a row or verify_timeout is over.

        A pass is HTTP 200, status healthy, and — when the service reports a version — `expect`
        (once every host runs it) or one of `accept` (between hosts behind one base_url).
        """
        kill_point("verify")
        accepted = tuple(accept)
        timeout_s = self.config.thresholds.health_response_ms.critical / 1000
        interval = self.settings.verify_interval.total_seconds()
        deadline = time.monotonic() + self.settings.verify_timeout.total_seconds()
        passes, reason = 0, "no check ran"
        while True:
            answer = await self.prober.fetch(self.env.healthz_url, timeout_s)
            verdict = judge(answer.status_code, answer.body, answer.error, expect, accepted)
            if verdict.ok:
                passes += 1
                if passes >= PASSES_NEEDED:
                    return verdict
            else:
                passes, reason = 0, verdict.reason
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if passes:
                    reason = f"only {passes} passing check(s) in a row before time ran out"
                return Verdict(False, reason)
            await asyncio.sleep(min(interval, remaining))
