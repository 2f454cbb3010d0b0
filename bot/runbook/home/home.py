"""The App Home's picture of everything, Slack-agnostic: what it shows, who may do what, how
often it may be redrawn.

`Overview.read()` draws one `HomeState` from the store for every viewer at once: each
environment with its latest health class, version, lock and firing alerts (the ones that
need someone first), the unresolved incidents, the firing alerts, the pending approvals, and
who may acknowledge each incident waiting for it. What differs per viewer — the
approvals they may decide or wait for, the incidents they may acknowledge — is asked of the
state (`approvals_for`, `may_acknowledge`), by the same rules the buttons are judged by.

Pacing (`refresh_interval`): a viewer's Home is redrawn at most once every DEBOUNCE, and less
often when there are so many viewers that together they would publish more than Slack's
views.publish allows (Tier 4: 100+ a minute per workspace).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock, utc_now
from bot.config import Access
from bot.runbook.health.health import Health
from bot.runbook.incidents.escalation import Status, plan_of
from bot.runbook.oncall.handoffs import open_work
from bot.runbook.oncall.oncall import OnCall, people_between
from bot.store import Alert, Approval, EnvironmentLock, Incident, Store
from bot.store.home import HomeStore
from bot.store.oncall import Override

DEBOUNCE = timedelta(seconds=5)
PUBLISHES_PER_MINUTE = 100  # views.publish, Tier 4: "100+ per minute"
RECENT = timedelta(hours=24)  # a viewer's Home is kept fresh this long after they open it
MAX_INCIDENTS = 1000  # read; the view shows the first few and counts the rest


def refresh_interval(viewers: int) -> timedelta:
    """The least time between two refreshes of one viewer's Home: DEBOUNCE, or longer when
    `viewers` refreshed that often would together exceed PUBLISHES_PER_MINUTE."""
    return max(DEBOUNCE, timedelta(minutes=1) * viewers / PUBLISHES_PER_MINUTE)


@dataclass(frozen=True)
class EnvironmentState:
    name: str
    health: Health | None  # None: never checked (or its class is not one we know)
    version: str | None
    lock: EnvironmentLock | None
    alerts: tuple[Alert, ...]

    @property
    def urgency(self) -> int:
        """0 first: Unhealthy, Degraded, locked or alerting, never checked, then the rest."""
        if self.health is Health.UNHEALTHY:
            return 0
        if self.health is Health.DEGRADED:
            return 1
        if self.lock is not None or self.alerts:
            return 2
        return 3 if self.health is None else 4

    @property
    def quiet(self) -> bool:
        return self.urgency == 4


@dataclass(frozen=True)
class HomeState:
    environments: tuple[EnvironmentState, ...]  # most urgent first, then in config order
    incidents: tuple[Incident, ...]  # triggered first, then by severity and age
    alerts: tuple[Alert, ...]  # firing or flapping
    approvals: tuple[Approval, ...]  # pending, oldest first
    # Per triggered incident, who was among the people of a level it reached since it opened.
    acknowledgers: Mapping[int, frozenset[str]]
    at: datetime


class Overview:
    """Reads the HomeState of the configured environments."""

    def __init__(
        self,
        environments: Sequence[str],
        store: Store,
        home_store: HomeStore,
        on_call: OnCall,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.environments = tuple(environments)
        self.store = store
        self.home_store = home_store
        self.on_call = on_call
        self.clock = clock

    async def read(self) -> HomeState:
        now = self.clock()
        work = await open_work(self.store, MAX_INCIDENTS)
        health = await asyncio.to_thread(self.home_store.environment_health)
        approvals = await asyncio.to_thread(self.home_store.pending_approvals)
        oldest = min((i.opened_at for i in work.incidents), default=now)
        overrides = await self.on_call.overrides_from(oldest) if work.incidents else []
        acknowledgers = {
            i.id: _paged_since_opened(i, overrides, now)
            for i in work.incidents
            if i.status == Status.TRIGGERED.value
        }
        locks = {lock.environment: lock for lock in work.locks}
        environments = []
        for name in self.environments:
            checked = health.get(name)
            environments.append(
                EnvironmentState(
                    name,
                    _health(checked.health) if checked else None,
                    checked.version if checked else None,
                    locks.get(name),
                    tuple(a for a in work.alerts if a.environment == name),
                )
            )
        order = {name: n for n, name in enumerate(self.environments)}
        environments.sort(key=lambda env: (env.urgency, order[env.name]))
        incidents = sorted(
            work.incidents,
            key=lambda i: (i.status != Status.TRIGGERED.value, i.severity, i.opened_at),
        )
        return HomeState(
            tuple(environments),
            tuple(incidents),
            tuple(work.alerts),
            tuple(approvals),
            acknowledgers,
            now,
        )


def _health(value: str) -> Health | None:
    try:
        return Health(value)
    except ValueError:
        return None


def _paged_since_opened(
    incident: Incident, overrides: Sequence[Override], now: datetime
) -> frozenset[str]:
    """The people of the levels the incident reached, at any time since it opened: the
    levels' fixed users, and whoever their rotations and overrides put on call meanwhile."""
    plan = plan_of(incident)
    people = set(plan.users_up_to(incident.top_level))
    for level in plan.levels[: incident.top_level + 1]:
        if level.rotation is not None:
            people |= people_between(level, incident.opened_at, now, overrides)
    return frozenset(people)


def may_acknowledge(incident: Incident, user_id: str, state: HomeState, access: Access) -> bool:
    """Whether the Acknowledge button would take `user_id`'s press: the incident waits for
    one, and they are an approver or among its levels' people since it opened (the rule
    escalation.Escalations.press judges a press by)."""
    if incident.status != Status.TRIGGERED.value:
        return False
    return access.may_approve(user_id) or user_id in state.acknowledgers.get(incident.id, ())


@dataclass(frozen=True)
class ViewerApprovals:
    to_decide: tuple[Approval, ...]  # requests the viewer may approve or reject
    asked: tuple[Approval, ...]  # the viewer's own requests, waiting for an approver


def approvals_for(user_id: str, state: HomeState, access: Access) -> ViewerApprovals:
    """An approver decides others' requests, never their own (approval.decide's rule)."""
    approver = access.may_approve(user_id)
    return ViewerApprovals(
        tuple(a for a in state.approvals if approver and a.requested_by != user_id),
        tuple(a for a in state.approvals if a.requested_by == user_id),
    )
