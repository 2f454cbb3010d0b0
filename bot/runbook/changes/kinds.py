"""The kinds of change the bot runs (deploy, rollback, backup, restart): each one's checklist as its
message lists it, every step's title, and a kind's title again from what its record keeps."""

from __future__ import annotations

from bot.runbook.changes import backup, deploy, deploy_steps, restart, rollback, rollback_plan

_CHECKLISTS: dict[str, tuple[tuple[str, str], ...]] = {
    "deploy": deploy_steps.STEPS,
    "rollback": rollback.STEPS,
    "backup": backup.STEPS,
    "restart": restart.STEPS,
}
# The keys the kinds share have the same titles, but for "backup": a backup run's "Back up".
_TITLES: dict[str, str] = {**deploy.TITLES, **rollback.TITLES, **dict(backup.STEPS)}


def checklist_of(kind: str) -> tuple[tuple[str, str], ...]:
    """A kind's steps (key, title) in the order its message lists them."""
    return _CHECKLISTS.get(kind, deploy_steps.STEPS)


def step_title(key: str) -> str:
    return _TITLES.get(key, key)


def recorded_title(
    kind: str, environment: str, hosts: dict[str, dict[str, object]], version: str | None
) -> str | None:
    """The title a run of this kind showed, from its record (after a restart); None: the
    view's own (a deploy's names its version)."""
    if kind == "rollback":
        return rollback_plan.recorded_title(environment, hosts, version)
    if kind == "backup":
        return backup.backup_title(environment)
    if kind == "restart":
        return restart.restart_title(environment)
    return None
