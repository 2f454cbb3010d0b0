"""The runbook's recovery checklists, worked in an incident: which procedures, their steps in
the runbook's words, which steps the bot can do itself, and where a checklist stands.

A checklist posted in an incident is a timeline event (`checklist`, its detail the
procedure's key); each tick or untick is an event of its own (`checked` / `unchecked`, detail
`<checklist event id>:<step index>`), with who and when. A tick is one INSERT: two people
ticking at once both land, and where a checklist stands is read back from its events, in
order — never a list read, changed and written back whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.store import IncidentEvent

CHECKLIST, CHECKED, UNCHECKED = "checklist", "checked", "unchecked"


class Does(StrEnum):
    """What the bot can do for a step, as the command a person would type."""

    BACKUPS = "backups"  # /rollback list <env>
    RESTORE = "restore"  # /rollback <env> <the newest backup>
    ROLL_BACK = "rollback"  # /rollback <env>
    HEALTH = "health"  # /health <env>
    DIAGNOSE = "diagnose"  # /health <env> diagnose
    LOGS = "logs"  # /health <env> logs errors


@dataclass(frozen=True)
class ChecklistStep:
    text: str
    does: Does | None = None


@dataclass(frozen=True)
class Procedure:
    key: str
    title: str
    section: str  # where it is in the runbook
    steps: tuple[ChecklistStep, ...]


def _steps(*steps: str | tuple[str, Does]) -> tuple[ChecklistStep, ...]:
    return tuple(
        ChecklistStep(s) if isinstance(s, str) else ChecklistStep(s[0], s[1]) for s in steps
    )


PROCEDURES: tuple[Procedure, ...] = (
    Procedure(
        "complete_failure",
        "Complete System Failure",
        "Disaster Recovery › Recovery Procedures",
        _steps(
            "Identify failure scope and cause",
            ("Check backup availability", Does.BACKUPS),
            "Provision new infrastructure (if needed)",
            ("Restore from most recent backup", Does.RESTORE),
            ("Verify system health", Does.HEALTH),
            "Resume normal operations",
            "Post-mortem analysis",
        ),
    ),
    Procedure(
        "data_corruption",
        "Data Corruption",
        "Disaster Recovery › Recovery Procedures",
        _steps(
            "Stop affected services immediately",
            "Assess corruption extent",
            ("Restore from backup", Does.RESTORE),
            "Verify data integrity",
            "Replay transactions if applicable",
            "Resume operations",
            "Implement prevention measures",
        ),
    ),
    Procedure(
        "health_check_failures",
        "Health Check Failures",
        "Troubleshooting › Common Issues",
        _steps(
            ("Check if service is running", Does.DIAGNOSE),
            "Check port binding",
            ("Check logs", Does.LOGS),
            "Test local connection",
            ("Verify system health", Does.HEALTH),
        ),
    ),
    Procedure(
        "rollback_checklist",
        "Rollback Checklist",
        "Rollback Procedures",
        _steps(
            "Stop affected services",
            ("Restore previous version from backup", Does.ROLL_BACK),
            "Verify configuration compatibility",
            "Restart services",
            ("Run health checks", Does.HEALTH),
            "Monitor for 10-15 minutes",
            "Notify stakeholders",
            "Document incident",
        ),
    ),
)
BY_KEY = {procedure.key: procedure for procedure in PROCEDURES}


@dataclass(frozen=True)
class Tick:
    by: str | None
    at: datetime


@dataclass(frozen=True)
class ChecklistState:
    """A posted checklist: its procedure, and each step's tick (None: not ticked)."""

    event_id: int
    procedure: Procedure
    ticks: tuple[Tick | None, ...]
    last_event_id: int  # the newest event it shows: a copy older than this is out of date

    @property
    def done(self) -> int:
        return sum(1 for tick in self.ticks if tick is not None)


def tick_detail(checklist_id: int, step: int) -> str:
    return f"{checklist_id}:{step}"


def parse_tick_detail(detail: str) -> tuple[int, int] | None:
    checklist, _, step = detail.partition(":")
    if not (checklist.isdigit() and step.isdigit()):
        return None
    return int(checklist), int(step)


def checklists(events: Iterable[IncidentEvent]) -> dict[int, ChecklistState]:
    """Every checklist posted in the incident, as its events (in order) leave it."""
    posted: dict[int, Procedure] = {}
    ticks: dict[int, list[Tick | None]] = {}
    last: dict[int, int] = {}
    for event in sorted(events, key=lambda e: e.id):
        if event.kind == CHECKLIST and event.detail in BY_KEY:
            procedure = BY_KEY[event.detail]
            posted[event.id] = procedure
            ticks[event.id] = [None] * len(procedure.steps)
            last[event.id] = event.id
        elif event.kind in (CHECKED, UNCHECKED):
            parsed = parse_tick_detail(event.detail)
            if parsed is None or parsed[0] not in posted:
                continue
            checklist, step = parsed
            if not 0 <= step < len(ticks[checklist]):
                continue
            ticks[checklist][step] = (
                Tick(event.user_id, event.at) if event.kind == CHECKED else None
            )
            last[checklist] = event.id
    return {cid: ChecklistState(cid, posted[cid], tuple(ticks[cid]), last[cid]) for cid in posted}


def step_of(states: dict[int, ChecklistState], checklist_id: int, step: int) -> bool:
    """Whether the checklist exists and has that step."""
    state = states.get(checklist_id)
    return state is not None and 0 <= step < len(state.procedure.steps)
