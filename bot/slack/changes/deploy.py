"""/deploy <env>: a deploy (or its dry run) now, or — where the environment requires approval —
the request an approver decides, and the deploy it starts once approved.

- `start`: one ChangeRun (run.py: lock, record, one checklist message with a Cancel button)
  of the procedure (bot/runbook/changes/deploy.py); on success, its aftercare (aftercare.py).
- A dry run: the same steps planned in one message, their exact commands in its thread;
  nothing is locked or recorded.
- `ask_approval`: the version pinned now (the approver approves exactly what will run), the
  Pre-Deployment Checklist and the steps, asked through approval.py; `start_approved` runs
  the approved deploy (approved.py calls it, once).
The aftercare's Roll back button is a rollback (rollback.py `undo_deploy`).
"""

from __future__ import annotations

from bot.config import Environment
from bot.runbook.changes.activate import show_version
from bot.runbook.changes.checklist import pre_deployment_checklist
from bot.runbook.changes.deploy import Deploy
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest
from bot.runbook.changes.deploy_steps import steps_to_run
from bot.runbook.changes.progress import Finished, Outcome
from bot.runbook.changes.releases import is_version
from bot.slack import blocks
from bot.slack.changes import aftercare, approval, locks
from bot.slack.changes.approval import ApprovalRequest, NotStartable
from bot.slack.changes.change_blocks import ChangeView
from bot.slack.changes.run import (
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
from bot.transport.base import Shell


async def start(services: Services, request: DeployRequest, conversation: Conversation) -> str:
    """Run a deploy (or a dry run) now; returns the one-line result for the audit."""
    env = request.environment
    procedure = Deploy(
        request,
        services.config,
        http=services.http,
        prober=services.health.prober,
        open_hosts=hosts_opener(services),
        local=local_transport(services, env),
        clock=services.store.clock,
    )
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
    env = request.environment
    refused = await locks.refused_while_locked(services, env, "request", conversation)
    if refused is not None:
        return refused
    version = request.version or await _version_now(services, env, conversation)
    if version is None:
        return "not asked: no version"
    pinned = DeployRequest(env, version, request.options, request.requested_by)
    checklist = await pre_deployment_checklist(
        pinned, services.config, http=services.http, open_hosts=hosts_opener(services)
    )
    asked = ApprovalRequest(
        kind="deploy",
        environment=env,
        requested_by=request.requested_by,
        version=version,
        flags=request.options.flags(),
        hosts=[str(h) for h in env.hosts] or ["local"],
        checklist=checklist,
        plan=steps_to_run(request, services.config),
        what=show_version(version),
        extra={"options": request.options.as_dict()},
    )
    return await approval.ask(services, asked, conversation)


async def _version_now(
    services: Services, env: Environment, conversation: Conversation
) -> str | None:
    """What the version command prints now: the approver approves a version, not whatever
    the command says later. None (and the requester told) when it prints none."""
    result = await local_transport(services, env).run(
        Shell(env.deploy.version), cwd=str(env.deploy.workdir)
    )
    printed = result.stdout.strip()
    if result.ok and is_version(printed):
        return printed
    said = f"exit status {result.exit_status}" if not result.ok else repr(printed[:64])
    problem = (
        f"`{env.deploy.version}` did not print a version ({said}), so there is nothing "
        f"to ask approval for. Give one: /deploy {env.name} <version>."
    )
    await answer(conversation, blocks.notice(problem, ":x:"))
    return None


async def start_approved(
    services: Services, approved: Approval, env: Environment, conversation: Conversation
) -> str:
    """Run the deploy an approver just approved, exactly as asked (its pinned version)."""
    version = str(approved.payload.get("version") or "")
    if not is_version(version):
        raise NotStartable(f"its version {version[:64]!r} is not a version")
    options = DeployOptions.from_dict(approved.payload.get("options"))
    request = DeployRequest(env, version, options, approved.requested_by, approved.decided_by)
    return await start(services, request, conversation)
