"""What the bot saw around an incident, gathered from the store for its post-mortem draft
(bot/runbook/incidents/postmortem.py writes it).

The incident's timeline (opened, escalated, acknowledged, notes, checklist ticks — every row
of incident_events), every page written for it (outbox rows: who, when due, when delivered),
the alerts linked to it or open on its environment meanwhile, with their thread lines (the
readings as they moved), the environment's deploys and rollbacks from a while before it
opened until it was resolved, and the /health diagnoses and log searches run on it then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.runbook.incidents.escalation import PAGE_DELIVERY, incident_name
from bot.store import (
    Alert,
    AlertEvent,
    AuditEntry,
    Deployment,
    Incident,
    IncidentEvent,
    Store,
)

# A deploy shortly before an incident is its most likely cause: the window opens this early.
LOOKBACK = timedelta(hours=1)
DIAGNOSE_WORDS = frozenset({"diagnose", "logs"})  # the /health runs a post-mortem tells


@dataclass(frozen=True)
class PageFact:
    """One page: to whom, for which level (0-based), when it fell due and when it went."""

    user_id: str
    level: int
    due_at: datetime
    delivered_at: datetime | None
    state: str  # the outbox row's: sent, refused, waiting, dropped, expired


@dataclass(frozen=True)
class AlertFact:
    alert: Alert
    events: tuple[AlertEvent, ...]


@dataclass(frozen=True)
class PostmortemFacts:
    incident: Incident
    events: tuple[IncidentEvent, ...]
    pages: tuple[PageFact, ...]
    alerts: tuple[AlertFact, ...]
    deployments: tuple[Deployment, ...]
    diagnoses: tuple[AuditEntry, ...]
    environment: str | None
    environment_from: str = ""  # where the environment was learnt ("its alert"), for the reader


def incident_environment(incident: Incident, opened_from: str | None) -> str | None:
    """The incident's environment: its own `environment` once incidents record one
    (`/escalate … --env`), else the one of what opened it (its alert, its rollback)."""
    own = getattr(incident, "environment", None)
    return str(own) if own else opened_from


def gather(store: Store, incident_id: int, now: datetime) -> PostmortemFacts | None:
    """Everything the post-mortem tells of one incident, as of `now` (None: no such incident).

    Synchronous store reads: run it with asyncio.to_thread from the event loop.
    """
    incident = store.incident(incident_id)
    if incident is None:
        return None
    since = incident.opened_at - LOOKBACK
    until = incident.resolved_at or now
    linked = store.alerts_about(incident.id, None, since, until)
    opened_from, where = _opened_from(store, incident, linked)
    environment = incident_environment(incident, opened_from)
    if environment != opened_from:
        where = "the incident"
    alerts = store.alerts_about(incident.id, environment, incident.opened_at, until)
    deployments = store.deployments_between(environment, since, until) if environment else []
    diagnoses = [
        entry
        for entry in store.audit_between("/health", incident.opened_at, until)
        if _diagnosis_of(entry, environment)
    ]
    return PostmortemFacts(
        incident=incident,
        events=tuple(store.incident_events(incident.id)),
        pages=tuple(_pages(store, incident)),
        alerts=tuple(AlertFact(a, tuple(store.alert_events(a.id))) for a in alerts),
        deployments=tuple(deployments),
        diagnoses=tuple(diagnoses),
        environment=environment,
        environment_from=where if environment else "",
    )


def _opened_from(store: Store, incident: Incident, linked: list[Alert]) -> tuple[str | None, str]:
    """The environment of what opened the incident, and what that was."""
    if linked:
        return linked[0].environment, "the alert that opened it"
    key = incident.dedupe_key or ""
    if key.startswith("alert:"):  # alert:<env>:<metric>, before the link was written
        return key.split(":")[1], "the alert that opened it"
    if key.startswith("rollback:") and key[len("rollback:") :].isdigit():
        deployment = store.deployment(int(key[len("rollback:") :]))
        if deployment is not None:
            return deployment.environment, "the rollback that opened it"
    return None, ""


def _pages(store: Store, incident: Incident) -> list[PageFact]:
    rows = store.deliveries_of(incident_name(incident.id), PAGE_DELIVERY)
    return [
        PageFact(
            user_id=str(row.user_id),
            level=int(row.payload.get("level", 0)),
            due_at=row.due_at,
            delivered_at=row.finished_at if row.state == "sent" else None,
            state=row.state,
        )
        for row in rows
    ]


def _diagnosis_of(entry: AuditEntry, environment: str | None) -> bool:
    """A `/health <env> diagnose|logs …` run (on the incident's environment, if known)."""
    words = entry.text.split()
    if len(words) < 2 or words[1] not in DIAGNOSE_WORDS:
        return False
    return environment is None or words[0] == environment
