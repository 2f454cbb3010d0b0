"""/deploy <env>: a deploy (or its dry run) now, or — where the environment requires approval —
the request an approver decides, and the deploy it starts once approved.

- `start`: one ChangeRun (run.py: lock, record, one checklist message with a Cancel button)
  of the procedure (bot/runbook/changes/deploy.py); on success, its aftercare (aftercare.py).
- A dry run: the same steps planned in one message, their exact commands in its thread;
  nothing is locked or recorded.
- `ask_approval`: the artifact built first (version → build → test → package in a workspace
  of its own, bot/runbook/changes/prepare.py), then asked through approval.py with the
  version, the commit, the package's sha256, the CI run of that commit, the Pre-Deployment
  Checklist and the steps; `start_approved` deploys exactly that package (approved.py calls
  it, once). The package waits under `<data_dir>/approved/` and goes when the request ends.
The aftercare's Roll back button is a rollback (rollback.py `undo_deploy`).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

from bot.config import Environment
from bot.runbook.changes.activate import show_version
from bot.runbook.changes.checklist import pre_deployment_checklist
from bot.runbook.changes.deploy import Deploy
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest, PinnedPackage
from bot.runbook.changes.deploy_steps import steps_to_run
from bot.runbook.changes.prepare import Prepare
from bot.runbook.changes.progress import Finished, Outcome, StepFailed
from bot.runbook.changes.releases import is_version
from bot.slack import blocks
from bot.slack.changes import aftercare, approval, locks
from bot.slack.changes.approval import ApprovalRequest, NotStartable
from bot.slack.changes.change_blocks import ChangeView
from bot.slack.changes.run import (
    ALREADY_STARTED,
    Change,
    ChangeRun,
    answer,
    hosts_opener,
    local_transport,
    post_in_thread,
)
from bot.slack.chat import Conversation
from bot.slack.live_message import LiveMessage
from bot.slack.services import Services
from bot.store import Approval


async def start(
    services: Services,
    request: DeployRequest,
    conversation: Conversation,
    *,
    approval_id: int | None = None,
) -> str:
    """Run a deploy (or a dry run) now; returns the one-line result for the audit.
    `approval_id`: the approved request it runs (its run key: it starts once)."""
    env = request.environment
    procedure = Deploy(request, services.config, **_procedure_parts(services, env))
    if request.options.dry_run:
        return await _dry_run(services, procedure, request, conversation)
    change = Change(
        "deploy",
        env,
        request.requested_by,
        version=request.version,
        approved_by=request.approved_by,
        options=request.options.as_dict(),
        flags=tuple(request.options.flags()),
        approval_id=approval_id,
    )
    run = ChangeRun(services, change, conversation)
    refused = await run.begin()
    if refused is not None:
        return refused
    outcome = await run.execute(procedure)
    if outcome.state == "succeeded":
        deployed = await run.recorded()
        if deployed is not None:
            await aftercare.begin(services, deployed, env)
    return outcome.summary


async def _dry_run(
    services: Services, procedure: Deploy, request: DeployRequest, conversation: Conversation
) -> str:
    view = ChangeView(
        kind="deploy",
        environment=request.environment.name,
        version=request.version,
        requested_by=request.requested_by,
        flags=request.options.flags(),
    )
    live = LiveMessage(conversation)
    await live.show(view.message())
    outcome: Outcome | None = None
    async for event in procedure.run():
        view.apply(event)
        if isinstance(event, Finished):
            outcome = event.outcome
    await live.finish(view.message())
    for part in view.plan_messages():
        await post_in_thread(services, live.ref, part)
    if live.ref is None:
        for part in view.plan_messages():
            await answer(conversation, part)
    return outcome.summary if outcome else "dry run"


# --- production: ask, then start on approval -----------------------------------------------


async def ask_approval(
    services: Services, request: DeployRequest, conversation: Conversation
) -> str:
    """Build, test and package first; then ask, showing exactly what will be deployed."""
    env = request.environment
    refused = await locks.refused_while_locked(services, env, "request", conversation)
    if refused is not None:
        return refused
    package_dir = services.approved_packages / f"{env.name}-{uuid.uuid4().hex[:12]}"
    pinned = await _prepare(services, request, conversation, package_dir)
    if pinned is None:
        await asyncio.to_thread(shutil.rmtree, package_dir, True)
        return "not asked: the build failed"
    built = DeployRequest(env, pinned.version, request.options, request.requested_by)
    checklist = await pre_deployment_checklist(
        built,
        services.config,
        http=services.http,
        open_hosts=hosts_opener(services),
        commit=pinned.commit,
    )
    asked = ApprovalRequest(
        kind="deploy",
        environment=env,
        requested_by=request.requested_by,
        version=pinned.version,
        flags=request.options.flags(),
        hosts=[str(h) for h in env.hosts] or ["local"],
        checklist=checklist,
        plan=steps_to_run(request, services.config),
        what=show_version(pinned.version),
        extra={
            "options": request.options.as_dict(),
            "package": pinned.as_dict(),
            approval.PINNED_DIR: str(package_dir),
        },
    )
    said = await approval.ask(services, asked, conversation)
    if said.startswith("not asked"):
        await asyncio.to_thread(shutil.rmtree, package_dir, True)
    return said


async def _prepare(
    services: Services, request: DeployRequest, conversation: Conversation, package_dir: Path
) -> PinnedPackage | None:
    """The package to ask approval for, built now; None (the requester told why) on failure."""
    env = request.environment
    what = show_version(request.version) if request.version else "the current version"
    await answer(
        conversation,
        blocks.notice(
            f"Building {what} for {env.name} before asking for approval "
            "(version → build → test → package): the approver approves that package.",
            ":hammer_and_wrench:",
        ),
    )
    procedure = Prepare(request, services.config, **_procedure_parts(services, env)).prepare_into(
        package_dir
    )
    outcome: Outcome | None = None
    failed: StepFailed | None = None
    async for event in procedure.run():
        if isinstance(event, StepFailed):
            failed = event
        if isinstance(event, Finished):
            outcome = event.outcome
    if outcome is not None and outcome.state == "prepared":
        return procedure.pinned_package()
    summary = outcome.summary if outcome else "the build ended without a result"
    if failed is not None and failed.output:
        summary += f"\n```{failed.output}```"
    await answer(conversation, blocks.notice(summary, ":x:"))
    return None


async def start_approved(
    services: Services, approved: Approval, env: Environment, conversation: Conversation
) -> str:
    """Run the deploy an approver just approved, exactly as asked: its pinned package (an
    older request without one: its pinned version, built now)."""
    version = str(approved.payload.get("version") or "")
    if not is_version(version):
        raise NotStartable(f"its version {version[:64]!r} is not a version")
    options = DeployOptions.from_dict(approved.payload.get("options"))
    package = PinnedPackage.from_dict(approved.payload.get("package"))
    request = DeployRequest(
        env, version, options, approved.requested_by, approved.decided_by, package
    )
    said = await start(services, request, conversation, approval_id=approved.id)
    if not said.endswith(ALREADY_STARTED):  # else it is the run that started first's package
        await approval.discard_pinned(services, approved)
    return said


def _procedure_parts(services: Services, env: Environment) -> dict[str, Any]:
    """What a deploy's procedure (the run, or the build before an approval) works with."""
    return {
        "http": services.http,
        "prober": services.health.prober,
        "open_hosts": hosts_opener(services),
        "local": local_transport(services, env),
        "clock": services.store.clock,
        "workspaces": services.workspaces,
    }
