"""What an approver reads before approving: the checklist of an approval request.

A deploy's is the runbook's Pre-Deployment Checklist: the items the bot can check are
checked (CI green, tests run, a backup planned, a release or backup to roll back to on every
host); the rest are listed for the approver, who confirms them by approving. A rollback's is
its plan, host by host: what each runs now and what it goes back to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import httpx

from bot.config import Config
from bot.runbook.changes import releases
from bot.runbook.changes.activate import one_line, show_version
from bot.runbook.changes.ci import CiClient, CiError
from bot.runbook.changes.deploy_request import DeployRequest
from bot.runbook.changes.procedure import MAX_PARALLEL_HOSTS, OpenHosts
from bot.runbook.changes.releases import HostState, Layout, RemoteCommandFailed
from bot.runbook.changes.rollback_plan import Move, RollbackPlan
from bot.transport.base import Transport, TransportError

# RUNBOOK.md "Pre-Deployment Checklist", in its order; the bot checks the first and the
# rollback plan, and adds what it knows about tests and backups.
FOR_THE_APPROVER = (
    "Code review approved",
    "Security scan passed",
    "Performance benchmarks acceptable",
    "Database migrations tested",
    "Stakeholders notified",
)


@dataclass(frozen=True)
class ChecklistItem:
    label: str
    state: Literal["passed", "failed", "confirm"]
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "state": self.state, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: object) -> ChecklistItem:
        if not isinstance(data, dict):
            return cls("?", "confirm")
        state = data.get("state")
        return cls(
            str(data.get("label", "?")),
            state if state in ("passed", "failed", "confirm") else "confirm",  # type: ignore[arg-type]
            str(data.get("detail", "")),
        )


async def pre_deployment_checklist(
    request: DeployRequest,
    config: Config,
    *,
    http: httpx.AsyncClient,
    open_hosts: OpenHosts,
    commit: str | None = None,
) -> list[ChecklistItem]:
    """`commit`: the commit built, whose CI run must be green (None: the default branch's)."""
    items = [await _ci(config, http, commit)]
    settings = request.environment.deploy
    if request.options.skip_tests:
        items.append(ChecklistItem("Tests run before the deploy", "failed", "--skip-tests"))
    else:
        items.append(
            ChecklistItem("Tests run before the deploy", "passed", f"`{settings.test}` runs first")
        )
    if request.options.no_backup:
        items.append(ChecklistItem("Backup before anything changes", "failed", "--no-backup"))
    else:
        items.append(
            ChecklistItem(
                "Backup before anything changes",
                "passed",
                f"on every host, to {settings.backup_dir}",
            )
        )
    items.append(await _rollback_plan(request, open_hosts))
    items.extend(ChecklistItem(label, "confirm") for label in FOR_THE_APPROVER)
    return items


async def _ci(config: Config, http: httpx.AsyncClient, commit: str | None) -> ChecklistItem:
    label = "All tests passing on CI/CD"
    if config.ci is None:
        return ChecklistItem(label, "confirm", "no `ci` in the config: the bot cannot check")
    try:
        verdict = await CiClient(config.ci, http).gate(commit)
    except CiError as exc:
        return ChecklistItem(label, "failed", f"cannot check: {exc}")
    link = f": {verdict.run.url}" if verdict.run and verdict.run.url else ""
    return ChecklistItem(label, "passed" if verdict.passed else "failed", verdict.summary + link)


async def _rollback_plan(request: DeployRequest, open_hosts: OpenHosts) -> ChecklistItem:
    label = "Rollback plan prepared"
    layout = Layout.of(request.environment)
    gate = asyncio.Semaphore(MAX_PARALLEL_HOSTS)

    async def look(host: Transport) -> HostState | str:
        async with gate:
            try:
                state, _ = await releases.inspect(host, layout)
            except (TransportError, RemoteCommandFailed) as exc:
                return one_line(exc)
            return state

    async with open_hosts(request.environment) as hosts:
        states = await asyncio.gather(*(look(h) for h in hosts))
    problems = []
    versions = set()
    for host, state in zip(hosts, states, strict=True):
        if isinstance(state, str):
            problems.append(f"cannot check {state}")
        elif not state.has_deployment:
            problems.append(f"{host.target} has nothing installed to go back to")
        else:
            current = state.current_release
            versions.add(show_version(current.version) if current and current.version else "its")
    if problems:
        return ChecklistItem(label, "failed", "; ".join(problems))
    what = versions.pop() if len(versions) == 1 else "its current release"
    if what == "its":
        what = "its current release"
    backup = "" if request.options.no_backup else ", and a backup is taken first"
    return ChecklistItem(label, "passed", f"every host has {what} to switch back to{backup}")


def rollback_checklist(plan: RollbackPlan) -> list[ChecklistItem]:
    """Every host of a rollback: what it runs, and what it goes back to (and how)."""
    return [
        ChecklistItem(
            move.host,
            "passed",
            f"runs {_ran(move)} → {plan.to_text}"
            + (" (restored into a new release)" if move.backup else " (an instant switch)"),
        )
        for move in plan.moves
    ] + [ChecklistItem(host, "passed", "already runs it: left as is") for host in plan.staying]


def _ran(move: Move) -> str:
    if move.current_version:
        return show_version(move.current_version)
    return f"release {move.current}" if move.current else "a hand-made install"
