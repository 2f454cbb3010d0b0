"""Incidents and the runbook's escalation path, as data the scheduler executes.

The runbook (Contact Information): On-call DevOps Engineer → DevOps Team Lead → Engineering
Manager → CTO. When an incident opens, the path in the config is frozen into it (a `Plan`), so
a config change never reshapes an incident already running. The incident keeps a cursor:
its status, the level being paged, a sequence number `seq` counting its state changes, and the
deadline of its next automatic step.

States: triggered (paging `level`) → acknowledged → resolved. With no acknowledgement by the
deadline the next level is paged; past the last level, the last level is paged again every
`repeat_every`. An acknowledgement left unresolved for `ack_reminder` asks the acknowledger
whether it is resolved; with no answer within `reopen_after` the incident is triggered again
at the level where it was acknowledged. Escalate moves up a level at once (from acknowledged
too: the acknowledger asks for help); Resolve ends it.

Every change is decided here by pure functions (`decide`, `on_deadline`) and applied by the
store as one transaction — the new state, its timeline event, its timers (the next deadline,
and a "sync" that posts what the step needs in Slack) and, when a level is paged, one page per
person of it (an outbox row each: a page is a record before it is a message) — conditional on
the seq it was decided on. A stale button press, a press delivered twice, a deadline timer
fired again after a crash: each finds the seq moved on and changes nothing.

Deadlines are counted from when a step was due, not from when it was handled: the CTO is
paged at the sum of the timeouts however late each step ran. A bot that was down past several
deadlines walks each level once, in order, as soon as it is back; missed repeats of the last
level are one page, not a burst.

Nothing here knows Slack. Incidents are opened through bot/slack/incidents.py
`Incidents.open_incident`, which adds what the chat needs (the channel, the plan from the
config). A procedure that needs someone paged — a rollback that failed — does not call it
itself: it reports that in what it yields or returns, and the Slack layer that runs it calls
`open_incident`, exactly as /escalate does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.clock import Clock, utc_now
from bot.config import AlertSettings, Escalation
from bot.runbook.oncall.oncall import OnCall
from bot.runbook.oncall.rotation import Rotation
from bot.store import LANE_PAGE, Incident, IncidentEvent, NewDelivery, NewEvent, NewTimer, Store
from bot.store.oncall import OnCallStore

DEADLINE_TIMER = "incident.deadline"
SYNC_TIMER = "incident.sync"
PAGE_DELIVERY = "incident.page"

SEVERITIES = (1, 2, 3)
DEFAULT_SEVERITY = 2
MAX_SUMMARY = 300

_INCIDENT_NAME = re.compile(r"INC-([1-9][0-9]{0,9})")


class Status(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    SNOOZE = "snooze"  # "Still working", the answer to a reminder


class Step(StrEnum):
    """What a timeline event records."""

    OPENED = "opened"
    ESCALATED = "escalated"  # the next level paged: deadline passed, or Escalate pressed
    REPAGED = "repaged"  # the last level paged again
    ACKNOWLEDGED = "acknowledged"
    REMINDED = "reminded"
    SNOOZED = "snoozed"
    REOPENED = "reopened"
    RESOLVED = "resolved"
    NOTE = "note"  # a line from elsewhere (an alert that resolved, a failed page)
    # A recovery checklist posted in the thread, and its ticks (checklists.py).
    CHECKLIST = "checklist"
    CHECKED = "checked"
    UNCHECKED = "unchecked"


# The steps after which the current level's people get a new page.
PAGING_STEPS = frozenset({Step.OPENED, Step.ESCALATED, Step.REPAGED, Step.REOPENED})
BY_DEADLINE = "deadline"
BY_BUTTON = "button"


def incident_name(incident_id: int) -> str:
    return f"INC-{incident_id}"


def parse_incident_name(text: str) -> int | None:
    """'INC-12' → 12; anything else → None."""
    match = _INCIDENT_NAME.fullmatch(text.strip())
    return int(match[1]) if match else None


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    name: str
    users: tuple[str, ...]  # paged every time, beside the rotation's holder
    timeout: timedelta | None  # how long it waits for an acknowledgement; None on the last
    # The definition, not a person: who holds the turn is looked up when a page is sent.
    rotation: Rotation | None = None


@dataclass(frozen=True)
class EscalationPlan:
    """The escalation path as it was when an incident opened."""

    levels: tuple[Level, ...]
    repeat_every: timedelta
    ack_reminder: timedelta
    reopen_after: timedelta

    @classmethod
    def from_config(cls, escalation: Escalation, alerts: AlertSettings) -> EscalationPlan:
        return cls(
            levels=tuple(
                Level(
                    level.name,
                    tuple(level.users),
                    level.timeout,
                    Rotation.from_config(level.rotation) if level.rotation else None,
                )
                for level in escalation.levels
            ),
            repeat_every=alerts.repeat_every,
            ack_reminder=escalation.ack_reminder,
            reopen_after=escalation.reopen_after,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": [
                {
                    "name": level.name,
                    "users": list(level.users),
                    "timeout_s": level.timeout.total_seconds() if level.timeout else None,
                    "rotation": level.rotation.to_json() if level.rotation else None,
                }
                for level in self.levels
            ],
            "repeat_every_s": self.repeat_every.total_seconds(),
            "ack_reminder_s": self.ack_reminder.total_seconds(),
            "reopen_after_s": self.reopen_after.total_seconds(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscalationPlan:
        return cls(
            levels=tuple(
                Level(
                    str(level["name"]),
                    tuple(str(u) for u in level["users"]),
                    None if level["timeout_s"] is None else timedelta(seconds=level["timeout_s"]),
                    Rotation.from_json(level["rotation"]) if level.get("rotation") else None,
                )
                for level in data["levels"]
            ),
            repeat_every=timedelta(seconds=data["repeat_every_s"]),
            ack_reminder=timedelta(seconds=data["ack_reminder_s"]),
            reopen_after=timedelta(seconds=data["reopen_after_s"]),
        )

    @property
    def last(self) -> int:
        return len(self.levels) - 1

    def wait_at(self, level: int) -> timedelta | None:
        """How long `level` is given to acknowledge before the next step (None: no levels)."""
        if not self.levels:
            return None
        if level < self.last:
            return self.levels[level].timeout
        return self.repeat_every

    def offsets(self) -> list[timedelta]:
        """When each level is paged, counted from the opening, if nobody acknowledges."""
        offsets, at = [], timedelta(0)
        for level in self.levels:
            offsets.append(at)
            at += level.timeout or timedelta(0)
        return offsets

    def users_up_to(self, level: int) -> set[str]:
        return {user for lv in self.levels[: level + 1] for user in lv.users}


def plan_of(incident: Incident) -> EscalationPlan:
    return EscalationPlan.from_json(incident.plan)


# --- the state machine ------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentChange:
    """A decided state change: the fields to set, the event to record, the next deadline, and
    when the level it pages fell due (None: it pages nobody)."""

    values: dict[str, object]
    event: NewEvent
    deadline: datetime | None
    paged_at: datetime | None = None


@dataclass(frozen=True)
class Refusal:
    """Why an action does not apply to the incident's current state."""

    reason: str


def _deadline(values: dict[str, object], at: datetime | None) -> dict[str, object]:
    return {**values, "deadline_at": at}


def _due_after(now: datetime, span: timedelta | None) -> datetime | None:
    return None if span is None else now + span


def _page_level(
    incident: Incident,
    plan: EscalationPlan,
    level: int,
    step: Step,
    at: datetime,
    now: datetime,
    *,
    user_id: str | None = None,
    detail: str = "",
) -> IncidentChange:
    """Trigger the incident at `level` and page it: escalate, re-page, re-open. `at` is when
    the step was due; the next deadline counts from it."""
    wait = plan.wait_at(level)
    deadline = _due_after(at, wait)
    if step is Step.REPAGED and deadline is not None and wait and deadline <= now:
        # Repeats the bot slept through are one page, not one each: keep to the grid.
        deadline += wait * ((now - deadline) // wait + 1)
    values: dict[str, object] = {
        "status": Status.TRIGGERED.value,
        "level": level,
        "top_level": max(incident.top_level, level),
        "paged_seq": incident.seq + 1,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "reminded_at": None,
    }
    return IncidentChange(
        _deadline(values, deadline), NewEvent(step.value, level, user_id, detail), deadline, at
    )


def _escalate(
    incident: Incident, plan: EscalationPlan, at: datetime, now: datetime, user_id: str | None
) -> IncidentChange:
    detail = BY_BUTTON if user_id else BY_DEADLINE
    if incident.level < plan.last:
        step, level = Step.ESCALATED, incident.level + 1
    else:
        step, level = Step.REPAGED, incident.level
    return _page_level(incident, plan, level, step, at, now, user_id=user_id, detail=detail)


def on_deadline(incident: Incident, plan: EscalationPlan, now: datetime) -> IncidentChange | None:
    """What happens when the incident's deadline passes (None: nothing, it has ended).

    The step is taken as of the deadline itself (when it was due), not as of now."""
    due = incident.deadline_at
    at = due if due is not None and due <= now else now
    if incident.status == Status.TRIGGERED:
        if not plan.levels:
            return None
        return _escalate(incident, plan, at, now, None)
    if incident.status == Status.ACKNOWLEDGED:
        if incident.reminded_at is None:
            deadline = at + plan.reopen_after
            return IncidentChange(
                _deadline({"reminded_at": at}, deadline),
                NewEvent(Step.REMINDED.value, incident.level, incident.acknowledged_by),
                deadline,
            )
        return _page_level(
            incident,
            plan,
            incident.level,
            Step.REOPENED,
            at,
            now,
            user_id=incident.acknowledged_by,
        )
    return None


def decide(
    incident: Incident, plan: EscalationPlan, action: Action, user_id: str, now: datetime
) -> IncidentChange | Refusal:
    """The change a button press makes to the incident as it is, or why it makes none."""
    status = Status(incident.status)
    if status is Status.RESOLVED:
        return Refusal("it is resolved already")
    if action is Action.ACKNOWLEDGE:
        if status is Status.ACKNOWLEDGED:
            return Refusal("it is acknowledged already")
        deadline = now + plan.ack_reminder
        values: dict[str, object] = {
            "status": Status.ACKNOWLEDGED.value,
            "acknowledged_by": user_id,
            "acknowledged_at": now,
            "first_acknowledged_at": incident.first_acknowledged_at or now,
            "reminded_at": None,
        }
        return IncidentChange(
            _deadline(values, deadline),
            NewEvent(Step.ACKNOWLEDGED.value, incident.level, user_id),
            deadline,
        )
    if action is Action.ESCALATE:
        if not plan.levels:
            return Refusal("there are no escalation levels in the config to page")
        return _escalate(incident, plan, now, now, user_id)
    if action is Action.RESOLVE:
        values = {"status": Status.RESOLVED.value, "resolved_by": user_id, "resolved_at": now}
        return IncidentChange(
            _deadline(values, None),
            NewEvent(Step.RESOLVED.value, incident.level, user_id),
            None,
        )
    # Still working: only an open question can be answered.
    if status is not Status.ACKNOWLEDGED or incident.reminded_at is None:
        return Refusal("there is no reminder waiting for an answer")
    deadline = now + plan.ack_reminder
    return IncidentChange(
        _deadline({"reminded_at": None}, deadline),
        NewEvent(Step.SNOOZED.value, incident.level, user_id),
        deadline,
    )


def may_press(
    incident: Incident, plan: EscalationPlan, user_id: str, approvers: Iterable[str]
) -> bool:
    """Anyone paged for the incident so far, or an approver."""
    return user_id in plan.users_up_to(incident.top_level) or user_id in set(approvers)


def time_to_acknowledge(incident: Incident) -> timedelta | None:
    if incident.first_acknowledged_at is None:
        return None
    return incident.first_acknowledged_at - incident.opened_at


def time_to_resolve(incident: Incident) -> timedelta | None:
    if incident.resolved_at is None:
        return None
    return incident.resolved_at - incident.opened_at


# An acknowledgement that keeps losing the race to other changes gives up after this many.
ACK_ATTEMPTS = 3

# --- applying changes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    incident: Incident


@dataclass(frozen=True)
class Stale:
    """The press was made on an older state (or lost a race): nothing changed."""

    incident: Incident


@dataclass(frozen=True)
class PressRefused:
    incident: Incident
    reason: str


@dataclass(frozen=True)
class NotAllowed:
    incident: Incident


PressResult = Changed | Stale | PressRefused | NotAllowed


def sync_timer(incident_id: int, event_key: str, now: datetime) -> NewTimer:
    """Post what a step needs (card, thread line, pages, updates) — due at once."""
    return NewTimer(SYNC_TIMER, f"{incident_name(incident_id)}/{event_key}", now, {})


def deadline_timer(incident_id: int, seq: int, due_at: datetime) -> NewTimer:
    """The next automatic step; `seq` is the state it was set for (a token: stale → no-op)."""
    return NewTimer(DEADLINE_TIMER, incident_name(incident_id), due_at, {"seq": seq})


def page_deliveries(
    incident_id: int, seq: int, level: int, people: Sequence[str], due_at: datetime
) -> list[NewDelivery]:
    """The pages of paging step `seq`, one per person on call for `level` when it fell due.

    Their words are the chat's: each is rendered when it is delivered (as the incident stands
    then); the key names the step and the person, so a page is written, and sent, once.
    """
    name = incident_name(incident_id)
    return [
        NewDelivery(
            key=f"{name}/page/{seq}/{user}",
            kind=PAGE_DELIVERY,
            lane=LANE_PAGE,
            user_id=user,
            subject=name,
            payload={"seq": seq, "level": level},
            about=f"{name} page to {user} (level {level + 1})",
            due_at=due_at,
        )
        for user in people
    ]


class Escalations:
    """Opens incidents and applies changes through the store; the scheduler does the rest.

    `wake(due_at)` is told of every timer written, so the scheduler can sweep when it falls
    due instead of at its next periodic sweep.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        wake: Callable[[datetime], None] = lambda due_at: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.wake = wake
        self.on_call = OnCall(OnCallStore(store), clock=clock)

    async def open(
        self,
        summary: str,
        severity: int,
        source: str,
        plan: EscalationPlan,
        *,
        link: str | None = None,
        opened_by: str | None = None,
        channel: str | None = None,
        dedupe_key: str | None = None,
        environment: str | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident and page its first level; (incident, False) if `dedupe_key`
        names one still unresolved, which is returned unchanged.

        Raises ValueError for an empty summary or a severity outside 1-3.
        """
        summary = " ".join(summary.split())
        if not summary:
            raise ValueError("an incident needs a summary")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be 1, 2 or 3, not {severity!r}")
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1] + "…"
        now = self.clock()
        deadline = _due_after(now, plan.wait_at(0))

        def timers(incident_id: int) -> list[NewTimer]:
            wanted = [sync_timer(incident_id, "1", now)]
            if deadline is not None:
                wanted.append(deadline_timer(incident_id, 1, deadline))
            return wanted

        # Who is paged is decided when the level falls due: whoever is on call then.
        people = await self.on_call.on_call(plan.levels[0], now) if plan.levels else ()
        incident, created = await asyncio.to_thread(
            self.store.create_incident,
            deliveries=lambda incident_id: page_deliveries(incident_id, 1, 0, people, now),
            summary=summary,
            severity=severity,
            source=source,
            link=link,
            opened_by=opened_by,
            channel=channel,
            dedupe_key=dedupe_key,
            environment=environment,
            plan=plan.to_json(),
            status=Status.TRIGGERED.value,
            deadline_at=deadline,
            opened_at=now,
            event=NewEvent(Step.OPENED.value, 0, opened_by, source),
            timers=timers,
        )
        if created:
            self.wake(now)
        return incident, created

    async def get(self, incident_id: int) -> Incident | None:
        return await asyncio.to_thread(self.store.incident, incident_id)

    async def unresolved(self) -> list[Incident]:
        return await asyncio.to_thread(self.store.unresolved_incidents, 1000)

    async def note(self, incident_id: int, text: str, *, user_id: str | None = None) -> bool:
        """Add a line to the incident's timeline (and its thread); False if there is none."""
        noted = await self.record(incident_id, Step.NOTE, " ".join(text.split()), user_id=user_id)
        return noted is not None

    async def record(
        self, incident_id: int, step: Step, detail: str, *, user_id: str | None = None
    ) -> IncidentEvent | None:
        """Add an event to the incident's timeline without changing its state — one INSERT,
        so events recorded at once all land — and have Slack synced; None: no such incident."""
        incident = await self.get(incident_id)
        if incident is None:
            return None
        now = self.clock()
        event = await asyncio.to_thread(
            self.store.note_incident,
            incident_id,
            NewEvent(step.value, incident.level, user_id, detail),
            lambda event_id: [sync_timer(incident_id, f"e{event_id}", now)],
        )
        if event is not None:
            self.wake(now)
        return event

    async def on_deadline(self, incident_id: int, seq: int) -> Incident | None:
        """The deadline timer set at `seq` fell due; returns the incident if it moved."""
        incident = await self.get(incident_id)
        if incident is None or incident.seq != seq:
            return None  # moved on since the timer was set (or this ran already)
        change = on_deadline(incident, plan_of(incident), self.clock())
        if change is None:
            return None
        return await self._apply(incident, change)

    async def press(
        self,
        incident_id: int,
        action: Action,
        user_id: str,
        *,
        seen_seq: int | None,
        approvers: Sequence[str],
    ) -> PressResult | None:
        """A button press by user_id on the state seen_seq (None: judge on the current one).

        Acknowledge is judged on the current state whatever copy it was pressed on: it means
        the same on every state (someone has it), so an older page still acknowledges an
        incident nobody has acknowledged yet, and says who did if someone has.

        None if there is no such incident.
        """
        incident = await self.get(incident_id)
        if incident is None:
            return None
        plan = plan_of(incident)
        if not may_press(incident, plan, user_id, approvers) and not await self._was_on_call(
            incident, plan, user_id
        ):
            return NotAllowed(incident)
        if action is Action.ACKNOWLEDGE:
            return await self._acknowledge(incident, user_id)
        if seen_seq is not None and seen_seq != incident.seq:
            return Stale(incident)
        decision = decide(incident, plan, action, user_id, self.clock())
        if isinstance(decision, Refusal):
            return PressRefused(incident, decision.reason)
        changed = await self._apply(incident, decision)
        if changed is None:  # someone else's change landed first
            current = await self.get(incident_id)
            assert current is not None
            return Stale(current)
        return Changed(changed)

    async def _acknowledge(self, incident: Incident, user_id: str) -> PressResult:
        """Acknowledge on the current state; a change landing first (a deadline paging the
        next level, say) is read and the acknowledgement judged again on it."""
        for _ in range(ACK_ATTEMPTS):
            decision = decide(
                incident, plan_of(incident), Action.ACKNOWLEDGE, user_id, self.clock()
            )
            if isinstance(decision, Refusal):
                return PressRefused(incident, decision.reason)
            changed = await self._apply(incident, decision)
            if changed is not None:
                return Changed(changed)
            current = await self.get(incident.id)
            assert current is not None
            incident = current
        return Stale(incident)

    async def paged_people(
        self, incident: Incident, events: Sequence[IncidentEvent]
    ) -> tuple[str, ...]:
        """Who the incident's current page goes to: whoever is on call for its level when
        that page fell due (the time of the step that paged it), so a page goes to whoever
        is on call when it is sent, and a delivery retried later pages the same people."""
        plan = plan_of(incident)
        paged_at = next((e.at for e in events if e.seq == incident.paged_seq), self.clock())
        return await self.on_call.on_call(plan.levels[incident.level], paged_at)

    async def _was_on_call(self, incident: Incident, plan: EscalationPlan, user_id: str) -> bool:
        """Whether a rotation put `user_id` among the people of a level reached so far at some
        time since the incident opened (may_press knows the fixed users)."""
        now = self.clock()
        for level in plan.levels[: incident.top_level + 1]:
            if level.rotation and await self.on_call.was_on_call(
                level, user_id, incident.opened_at, now
            ):
                return True
        return False

    async def _apply(self, incident: Incident, change: IncidentChange) -> Incident | None:
        now = self.clock()
        new_seq = incident.seq + 1
        timers = [sync_timer(incident.id, str(new_seq), now)]
        cancel: list[tuple[str, str]] = []
        if change.deadline is not None:
            timers.append(deadline_timer(incident.id, new_seq, change.deadline))
        else:
            cancel.append((DEADLINE_TIMER, incident_name(incident.id)))
        pages: list[NewDelivery] = []
        if change.paged_at is not None:
            level = int(change.values["level"])  # type: ignore[call-overload]
            people = await self.on_call.on_call(plan_of(incident).levels[level], change.paged_at)
            pages = page_deliveries(incident.id, new_seq, level, people, change.paged_at)
        changed = await asyncio.to_thread(
            self.store.change_incident,
            incident.id,
            incident.seq,
            change.values,
            change.event,
            timers,
            cancel,
            pages,
        )
        if changed is not None:
            for timer in timers:
                self.wake(timer.due_at)
        return changed
