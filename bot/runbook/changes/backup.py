"""The runbook's Manual Backups (`/rollback backup <env>`): archive what runs now on every
host, then prune to keep_backups, named and pruned exactly as /deploy's backups are.

    lock → back up (every host, up to 5 at once) → unlock
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bot.clock import Clock, utc_now
from bot.config import Environment
from bot.runbook.changes import leftovers, releases
from bot.runbook.changes.activate import Clocked, human_size, show_version
from bot.runbook.changes.procedure import OpenHosts, StepError, each_host, locked, unlocked
from bot.runbook.changes.progress import Event, Finished, Outcome, StepFailed, VersionKnown
from bot.runbook.changes.releases import Backup, Layout
from bot.runbook.changes.rollback_plan import hosts_text
from bot.transport.base import Transport

# A backup's checklist, as its message shows it.
STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("backup", "Back up"),
    ("unlock", "Unlock"),
)


def backup_title(environment: str) -> str:
    return f"Back up {environment}"


@dataclass
class ManualBackup:
    """Archive what runs now on every host of env (one name on all of them)."""

    env: Environment
    open_hosts: OpenHosts
    clock: Clock = utc_now
    taken: dict[str, Backup | None] = field(default_factory=dict)
    versions: set[str | None] = field(default_factory=set)
    removed: int = 0

    async def run(self) -> AsyncIterator[Event]:
        clocked = Clocked()
        layout = Layout.of(self.env)
        name = self.env.name
        yield locked(name, "backup")
        taken_at = self.clock()  # one name on every host: one backup of the environment

        async def back_up(host: Transport) -> str:
            await leftovers.tidy(host, layout)  # a half-written archive of a run cut short
            state, _ = await releases.inspect(host, layout)
            backup, removed = await releases.take_backup(host, layout, state, taken_at)
            self.taken[host.target] = backup
            if backup is None:
                return "nothing installed on this host: nothing to back up"
            current = state.current_release
            self.versions.add(current.version if current else None)
            self.removed += len(removed)
            what = (
                show_version(current.version)
                if current and current.version
                else ("the hand-made bin/" if state.needs_adoption else "the current release")
            )
            pruned = f"; {len(removed)} old removed (keep_backups {layout.keep_backups})"
            size = human_size(backup.size)
            return f"{backup.name} ({size}) of {what}{pruned if removed else ''}"

        async with self.open_hosts(self.env) as hosts:
            try:
                async for event in each_host("backup", hosts, back_up):
                    yield event
            except StepError as failure:
                yield unlocked(name)
                yield Finished(self._failed(failure.event, clocked.seconds))
                return
        yield unlocked(name)
        made = [b for b in self.taken.values() if b is not None]
        if not made:
            summary = f"Nothing to back up on {name}: nothing is installed on its hosts yet."
            yield Finished(Outcome("failed", summary, seconds=clocked.seconds))
            return
        version = self.versions.pop() if len(self.versions) == 1 else None
        if version is not None:
            yield VersionKnown(version)
        count = len(made)
        of = f" of {show_version(version)}" if version else ""
        summary = f"Backed up {name}{of}: {made[0].name} on {count} host{'s' if count != 1 else ''}"
        if self.removed:
            summary += f"; {self.removed} older archive(s) removed (keep_backups)"
        yield Finished(Outcome("succeeded", summary + ".", version, seconds=clocked.seconds))

    def _failed(self, failure: StepFailed, seconds: float) -> Outcome:
        summary = f"Backup of {self.env.name} failed on {failure.host}: {failure.error}"
        made = [t for t, b in self.taken.items() if b is not None]
        if made:
            summary += f" ({hosts_text(made)} did get it)"
        return Outcome.of("failed", summary + ".", failure, seconds=seconds)
