"""A rollback that failed, or was cut short by its bot stopping, opens an incident through the
/escalate path (services.incidents.open_incident), which pages the escalation path: SEV 1
where the environment requires approval, else SEV 2, linking the rollback's checklist; one
incident per rollback however often it is asked for."""

from __future__ import annotations

import logging

from bot.runbook.changes.kinds import step_title
from bot.slack.services import Services
from bot.store import Deployment, Incident, StoreError

log = logging.getLogger(__name__)


async def open_rollback_incident(
    services: Services, deployment: Deployment, summary: str
) -> tuple[Incident, int]:
    """Open (or join) the rollback's incident: it and its severity. Raises StoreError or
    ValueError as open_incident does."""
    env = services.config.environments.get(deployment.environment)
    severity = 1 if env is not None and env.requires_approval else 2
    incident, _ = await services.incidents.open_incident(
        summary,
        severity,
        source="rollback",
        link=deployment.permalink,
        opened_by=deployment.requested_by,
        channel=deployment.channel,
        dedupe_key=f"rollback:{deployment.id}",
        environment=deployment.environment,
    )
    return incident, severity


async def page_interrupted_rollback(services: Services, deployment: Deployment) -> None:
    """A rollback cut short by its bot stopping may have left a host stopped or half-way: that
    is a failed rollback, and a failed rollback opens an incident (which pages)."""
    try:
        await open_rollback_incident(
            services,
            deployment,
            f"Rollback #{deployment.id} of {deployment.environment} was interrupted during "
            f"{step_title(deployment.step)}: the bot stopped. Its hosts may be part-way; "
            "check them.",
        )
    except (StoreError, ValueError) as exc:
        log.error(
            "rollback #%d of %s was interrupted and no incident could be opened (%s): page "
            "someone by hand",
            deployment.id,
            deployment.environment,
            exc,
        )
