"""The diagnosis's Restart service: one ChangeRun (lock, record, audit, one message) of the
restart procedure (bot/runbook/changes/restart.py); where the environment requires approval,
an approver decides first (approval.py; approved.py starts it, once)."""

from __future__ import annotations

from bot.config import Environment
from bot.runbook.changes.checklist import ChecklistItem
from bot.runbook.changes.restart import Restart, restart_title, steps_to_run
from bot.slack.changes import approval, locks
from bot.slack.changes.approval import ApprovalRequest
from bot.slack.changes.run import Change, ChangeRun, hosts_opener
from bot.slack.chat import Conversation
from bot.slack.services import Services
from bot.store import Approval


async def restart_service(
    services: Services, env: Environment, user_id: str, conversation: Conversation
) -> str:
    """Refused while env is locked; else run now, or ask an approver (requires_approval)."""
    refused = await locks.refused_while_locked(services, env, "restart", conversation)
    if refused is not None:
        return refused
    if not env.requires_approval:
        return await start(services, env, user_id, None, conversation)
    hosts = [str(host) for host in env.hosts] or ["local"]
    asked = ApprovalRequest(
        kind="restart",
        environment=env,
        requested_by=user_id,
        version="",
        flags=[],
        hosts=hosts,
        checklist=[
            ChecklistItem(
                "Service command",
                "confirm",
                f"`{env.deploy.restart}` on each host, one at a time, each verified healthy",
            )
        ],
        plan=steps_to_run(),
        what=f"a restart of the service on {env.name}",
    )
    return await approval.ask(services, asked, conversation)


async def start_approved(
    services: Services, approved: Approval, env: Environment, conversation: Conversation
) -> str:
    return await start(
        services,
        env,
        approved.requested_by,
        approved.decided_by,
        conversation,
        approval_id=approved.id,
    )


async def start(
    services: Services,
    env: Environment,
    requested_by: str,
    approved_by: str | None,
    conversation: Conversation,
    *,
    approval_id: int | None = None,
) -> str:
    change = Change(
        "restart",
        env,
        requested_by,
        approved_by=approved_by,
        title=restart_title(env.name),
        approval_id=approval_id,  # the request's run key: started once
    )
    run = ChangeRun(services, change, conversation)
    refused = await run.begin()
    if refused is not None:
        return refused
    procedure = Restart(
        env,
        services.config,
        prober=services.health.prober,
        open_hosts=hosts_opener(services),
        clock=services.store.clock,
    )
    outcome = await run.execute(procedure)
    return outcome.summary
