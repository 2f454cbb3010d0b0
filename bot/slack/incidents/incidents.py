"""Incidents in Slack: open one, press its buttons, and post what each step needs.

`Incidents.open_incident` is the one way in — /escalate, a critical alert and a failed
rollback all open incidents through it. Opening and every later change are store
transactions (bot/runbook/escalation.py) that also set an `incident.sync` timer and, when a
level is paged, write its pages to the outbox (one row per person). The timer's handler,
`sync`, brings Slack up to date with the incident, every message through the outbox
(bot/slack/outbox.py, in its page lane):

1. the card in the incidents channel, posted once;
2. a thread line for every step of the timeline not yet in the thread, in order;
3. every page written for it, in order — the people of each level that fell due, even while
   Slack was away (a page that goes out late says when it was due, and why);
4. the reminder to the acknowledger, once per reminder;
5. every copy already posted — the card, each page, each reminder — updated to the current
   state, so no one is left looking at a live button for a closed incident.

Once the incident is resolved, its post-mortem draft goes in the card's thread right after the
thread's lines, as a file, once (bot/slack/incidents/postmortem.py).

Each message is recorded once Slack accepted it, so a retry posts only what is missing; each
carries its outbox key, so one whose answer was lost is found, not posted again. A message
that could not go because Slack is away waits in the outbox, whose worker sends it when Slack
answers and has the incident synced again then (to record it and post what follows); a
message's own trouble (Slack answered fatal_error) is the timer's to retry, with backoff. One
Slack refuses for good (no such user) is recorded, noted on the timeline, logged at ERROR, and
not tried again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.incidents.checklists import checklists
from bot.runbook.incidents.escalation import (
    DEFAULT_SEVERITY,
    PAGE_DELIVERY,
    SYNC_TIMER,
    Action,
    Changed,
    EscalationPlan,
    Escalations,
    NotAllowed,
    PressRefused,
    Stale,
    Status,
    Step,
    incident_name,
    page_deliveries,
    parse_incident_name,
    plan_of,
)
from bot.scheduler import RetryLater, Scheduler
from bot.slack.chat import Chat, ChatError, Message
from bot.slack.delivery import Dropped, Outcome, Pending, Refused, Sent
from bot.slack.incidents import checklist_blocks, incident_blocks
from bot.slack.incidents.postmortem import Thread, filename, share_postmortem
from bot.slack.outbox import Outbox, outbox_of
from bot.slack.posting_lease import POSTING_LEASE, posting_lease
from bot.store import (
    LANE_PAGE,
    Delivery,
    Incident,
    IncidentEvent,
    IncidentMessage,
    NewDelivery,
    Store,
    Timer,
)
from bot.store.outbox import UPDATE

log = logging.getLogger(__name__)

CARD, THREAD, PAGE, REMINDER = "card", "thread", "page", "reminder"
SYNC_LEASE = POSTING_LEASE
MAX_SYNC_ROUNDS = 5
MAX_RETRY_LATER = timedelta(minutes=5)

_LINK = re.compile(r"https?://[^\s<>|]{1,2000}")


class DeliveryFailed(Exception):
    """Something for an incident could not be posted now; the sync timer tries again."""


class SlackAway(RetryLater):
    """Nothing could be posted because Slack is unreachable: the outbox has it, and the timer
    looks again later (a log line at INFO, not a traceback per try)."""


@dataclass(frozen=True)
class Failure:
    what: str
    quiet: bool  # Slack away, or another sender on it: retried without a traceback


def check_delivered(name: str, failures: list[Failure], outbox: Outbox) -> None:
    """After a sync pass: raise to have the timer try again, if anything needs it.

    What waits in the outbox only because Slack is away (or another sender has it) is the
    delivery worker's, which has the subject synced again once it delivered it: nothing to
    retry here, and nothing to log per try. Without a worker running (a bare outbox, in
    process) the timer is the only retry: SlackAway, a RetryLater. Anything else (a message's
    own trouble) is DeliveryFailed, retried with backoff and logged.
    """
    if not failures:
        return
    text = f"{name}: " + "; ".join(f.what for f in failures)
    if not all(f.quiet for f in failures):
        raise DeliveryFailed(text)
    if outbox.running:
        return
    away = outbox.health.down_since
    seconds = (outbox.clock() - away).total_seconds() if away is not None else 0.0
    raise SlackAway(text, min(MAX_RETRY_LATER, timedelta(seconds=max(5.0, seconds))))


@dataclass(frozen=True)
class PressReply:
    """What a button press came to: a private answer (None: the messages show it), the audit
    line, and whether the presser was refused."""

    answer: Message | None
    result: str
    denied: bool = False


class KeyedLocks:
    """One asyncio.Lock per incident, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Incidents:
    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat | Outbox,
        scheduler: Scheduler,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.owner = scheduler.owner
        self.scheduler = scheduler
        self.outbox = outbox_of(chat, store, clock)
        self.outbox.render(PAGE_DELIVERY, self._render_page)
        self.outbox.on_delivered("INC-", self._delivered)
        self.escalations = Escalations(store, clock=clock, wake=scheduler.sweep_at)
        self._locks = KeyedLocks()

    # --- the way in -----------------------------------------------------------------------

    async def open_incident(
        self,
        summary: str,
        severity: int = DEFAULT_SEVERITY,
        source: str = "bot",
        link: str | None = None,
        *,
        opened_by: str | None = None,
        channel: str | None = None,
        dedupe_key: str | None = None,
        environment: str | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident and page the escalation path; returns (incident, created).

        It goes to `slack.incidents_channel`, else to `channel` (where /escalate was typed),
        else to `slack.alerts_channel`. `source` says what opened it ("/escalate", "alert",
        "rollback"); `link` (http/https) points at the details. With `dedupe_key`, an
        unresolved incident already opened with that key is returned instead of a new one.
        `environment` (a configured one) is where it happens: its checklists act there.
        Raises ValueError for an empty summary or a severity outside 1-3, StoreError if the
        database is down. Pages go out from the scheduler, at once, retried until they land.
        """
        slack = self.config.slack
        target = slack.incidents_channel or channel or slack.alerts_channel
        if target is None:
            log.error(
                "incident opened with no channel to post in: set slack.incidents_channel; "
                "only the pages (DMs) go out"
            )
        if link is not None and _LINK.fullmatch(link) is None:
            log.warning("incident link %r is not an http(s) URL; left out", link[:80])
            link = None
        plan = EscalationPlan.from_config(self.config.escalation, self.config.alerts)
        if not plan.levels:
            log.error("incident opened but nobody is paged: the config has no escalation.levels")
        return await self.escalations.open(
            summary,
            severity,
            source,
            plan,
            link=link,
            opened_by=opened_by,
            channel=target,
            dedupe_key=dedupe_key,
            environment=environment,
        )

    async def note(self, incident_id: int, text: str, *, user_id: str | None = None) -> bool:
        """A line on the incident's timeline and in its thread (an alert resolved, say)."""
        return await self.escalations.note(incident_id, text, user_id=user_id)

    async def get(self, incident_id: int) -> Incident | None:
        return await self.escalations.get(incident_id)

    # --- people ---------------------------------------------------------------------------

    async def press(
        self, action: Action, value: str, block_id: str | None, user_id: str
    ) -> PressReply:
        """A button on the card, a page or a reminder."""
        incident_id = parse_incident_name(value)
        if incident_id is None:
            return PressReply(incident_blocks.press_answer(None, value), "no such incident")
        shown = incident_blocks.parse_block_id(block_id)
        # A press whose block_id is not one of ours is judged on the current state alone.
        seen_seq = shown[1] if shown is not None and shown[0] == incident_id else None
        result = await self.escalations.press(
            incident_id,
            action,
            user_id,
            seen_seq=seen_seq,
            approvers=self.config.access.approvers,
        )
        answer = incident_blocks.press_answer(result, value, action)
        name = incident_name(incident_id)
        if result is None:
            return PressReply(answer, f"{name}: no such incident")
        outcome = {Changed: "done", Stale: "stale", PressRefused: "refused", NotAllowed: "denied"}
        return PressReply(
            answer,
            f"{name} {action.value}: {outcome[type(result)]} (now {result.incident.status})",
            denied=isinstance(result, NotAllowed),
        )

    async def postmortem(self, incident_id: int, typed_in: str) -> tuple[Message, str]:
        """`/escalate postmortem INC-<n>`: the draft as of now, shared again in the incident's
        thread (where it was typed, if the incident has no message); the asker's answer and the
        audit line. Raises StoreError."""
        name = incident_name(incident_id)
        incident = await self.get(incident_id)
        if incident is None:
            return incident_blocks.no_such_incident(name), f"{name}: no such incident"
        messages = await asyncio.to_thread(self.store.incident_messages, incident_id)
        card = next((m for m in messages if m.role == CARD and m.ts and m.channel), None)
        thread = Thread(card.channel, ts=card.ts) if card and card.channel else Thread(typed_in)
        # One share per second: a command delivered twice shares the draft once.
        suffix = f"{self.clock():%Y%m%d-%H%M%S}"
        outcome = await share_postmortem(
            self.outbox, self.store, self.clock, incident, thread, suffix=suffix
        )
        where = "its thread" if card is not None else "this channel"
        answer = incident_blocks.postmortem_answer(
            name, filename(incident_id, suffix), where, outcome
        )
        return answer, f"{name} post-mortem draft: {type(outcome).__name__.lower()}"

    async def status(self) -> Message:
        incidents = await self.escalations.unresolved()
        return incident_blocks.open_incidents(incidents, self.clock())

    # --- timers ---------------------------------------------------------------------------

    async def on_deadline_timer(self, timer: Timer) -> None:
        incident_id = parse_incident_name(timer.key)
        seq = timer.payload.get("seq")
        if incident_id is None or not isinstance(seq, int):
            log.error("incident deadline timer #%d is malformed (%r); dropped", timer.id, timer.key)
            return
        await self.escalations.on_deadline(incident_id, seq)

    async def on_sync_timer(self, timer: Timer) -> None:
        incident_id = parse_incident_name(timer.key.partition("/")[0])
        if incident_id is None:
            log.error("incident sync timer #%d is malformed (%r); dropped", timer.id, timer.key)
            return
        await self.sync(incident_id)

    async def sync(self, incident_id: int) -> None:
        """Bring Slack up to date with the incident. Raises DeliveryFailed or SlackAway (a
        RetryLater) to be tried again."""
        name = incident_name(incident_id)
        async with self._locks.hold(incident_id):

            async def take() -> bool:
                return await asyncio.to_thread(
                    self.store.lease_incident_sync,
                    incident_id,
                    self.owner,
                    self.clock(),
                    SYNC_LEASE,
                )

            async def release() -> None:
                await asyncio.to_thread(self.store.release_incident_sync, incident_id, self.owner)

            async with posting_lease(name, take, release):
                await self._sync_rounds(incident_id)

    async def _sync_rounds(self, incident_id: int) -> None:
        failures: list[Failure] = []
        for _ in range(MAX_SYNC_ROUNDS):
            incident = await asyncio.to_thread(self.store.incident, incident_id)
            if incident is None:
                return
            events = await asyncio.to_thread(self.store.incident_events, incident_id)
            messages = await asyncio.to_thread(self.store.incident_messages, incident_id)
            failures = await _Delivery(self, incident, events, messages).run()
            latest = await asyncio.to_thread(self.store.incident_events, incident_id)
            if len(latest) == len(events):
                break  # nothing happened meanwhile: what was posted is current
        check_delivered(incident_name(incident_id), failures, self.outbox)

    async def _render_page(self, row: Delivery) -> Message | None:
        """A page, as the incident stands when it goes; None once nobody needs waking."""
        incident_id = parse_incident_name(row.subject or "")
        incident = await self.get(incident_id) if incident_id is not None else None
        if incident is None or incident.status != Status.TRIGGERED:
            return None
        return incident_blocks.page(incident, int(row.payload.get("level", incident.level)))

    async def _delivered(self, row: Delivery) -> None:
        """The outbox delivered something of an incident on its own (Slack came back): sync
        it now, to record it and post what follows (thread lines, updated copies)."""
        await self.scheduler.schedule(SYNC_TIMER, f"{row.subject}/delivered", self.clock())


@dataclass(frozen=True)
class _Thread:
    """Where thread lines go: the card's ts, or the card's outbox key while it waits."""

    ts: str | None = None
    of: str | None = None


class _Delivery:
    """One pass of posting and updating for one state of one incident."""

    def __init__(
        self,
        incidents: Incidents,
        incident: Incident,
        events: list[IncidentEvent],
        messages: list[IncidentMessage],
    ) -> None:
        self.incidents = incidents
        self.outbox = incidents.outbox
        self.store = incidents.store
        self.incident = incident
        self.plan = plan_of(incident)
        self.events = events
        self.messages = messages
        self.recorded = {(m.role, m.step, m.target): m for m in messages}
        self.checklists = checklists(events)
        self.failures: list[Failure] = []
        self.name = incident_name(incident.id)

    async def run(self) -> list[Failure]:
        card = await self._card()
        if card is not None:
            waiting = await self._thread(card)
            if self.incident.status == Status.RESOLVED:
                await self._postmortem(card, waiting)
        await self._pages()
        await self._reminder()
        await self._update_copies()
        return self.failures

    def _new(
        self, kind: str, key: str, content: Message, about: str, **where: object
    ) -> NewDelivery:
        return NewDelivery(
            key=f"{self.name}/{key}",
            kind=f"incident.{kind}",
            lane=LANE_PAGE,
            text=content.text,
            blocks=content.blocks,
            subject=self.name,
            about=f"{self.name} {about}",
            **where,  # type: ignore[arg-type]
        )

    async def _card(self) -> _Thread | None:
        channel = self.incident.channel
        if channel is None:
            return None
        existing = self.recorded.get((CARD, 0, channel))
        if existing is not None:
            return _Thread(ts=existing.ts) if existing.ts else None
        content = incident_blocks.incident_card(self.incident)
        new = self._new(CARD, CARD, content, f"card in {channel}", channel=channel)
        outcome = await self._send(CARD, 0, channel, new)
        if isinstance(outcome, Sent) and outcome.ref is not None:
            return _Thread(ts=outcome.ref.ts)
        return _Thread(of=new.key) if isinstance(outcome, Pending) else None

    async def _thread(self, card: _Thread) -> bool:
        """Post the timeline's lines not yet in the thread; whether one of them waits."""
        channel = self.incident.channel
        assert channel is not None
        waiting = card.ts is None  # lines go behind the card (or a line that did not go)
        # Who each paging step's pages went to (the rows written with the step).
        paged: dict[int, list[str]] = {}
        for row in await asyncio.to_thread(self.store.deliveries_of, self.name, PAGE_DELIVERY):
            paged.setdefault(int(row.payload.get("seq", 0)), []).append(str(row.user_id))
        for event in self.events:
            if event.kind == Step.OPENED or (THREAD, event.id, channel) in self.recorded:
                continue
            shown = None
            checklist = self.checklists.get(event.id)
            if checklist is not None:  # the checklist itself, as its ticks leave it now
                line = checklist_blocks.checklist(self.incident, checklist)
                shown = checklist.last_event_id
            else:
                line = incident_blocks.timeline_line(event, self.incident, paged.get(event.seq, ()))
            if line is None:
                continue
            new = self._new(
                THREAD,
                f"thread/{event.id}",
                line,
                f"thread line {event.id}",
                channel=channel,
                thread_ts=card.ts,
                thread_of=card.of,
            )
            outcome = await self._send(
                THREAD, event.id, channel, new, attempt=not waiting, shown=shown
            )
            waiting = waiting or isinstance(outcome, Pending)
        return waiting

    async def _postmortem(self, card: _Thread, waiting: bool) -> None:
        """The post-mortem draft, as a file in the thread once the incident is resolved (once:
        its outbox key is the incident's)."""
        channel = self.incident.channel
        assert channel is not None
        thread = Thread(channel, ts=card.ts, of=card.of)
        outcome = await share_postmortem(
            self.outbox,
            self.store,
            self.incidents.clock,
            self.incident,
            thread,
            attempt=not waiting,
        )
        if isinstance(outcome, Pending):
            what = "the post-mortem draft"
            self.failures.append(Failure(f"{what}: {outcome.reason}", outcome.quiet))
        elif isinstance(outcome, Refused):
            log.error(
                "%s: Slack refused the post-mortem draft for good (%s) — check that the bot "
                "has files:write and is in %s",
                self.name,
                outcome.error.error,
                channel,
            )

    async def _pages(self) -> None:
        """Every page written for the incident, in the order they fell due."""
        incident = self.incident
        if incident.status == Status.TRIGGERED and self.plan.levels:
            # Written with the step; written here too for an incident opened before pages
            # were outbox rows (a no-op otherwise: the key is there).
            now = self.incidents.clock()
            people = await self.incidents.escalations.paged_people(incident, self.events)
            for new in page_deliveries(
                incident.id, incident.paged_seq, incident.level, people, now
            ):
                await self.outbox.send(new, attempt=False)
        rows = await asyncio.to_thread(self.store.deliveries_of, self.name, PAGE_DELIVERY)
        blocked = False
        for row in rows:
            step, user = int(row.payload.get("seq", 0)), str(row.user_id)
            if (PAGE, step, user) in self.recorded:
                continue
            outcome = await self.outbox.send_row(row, attempt=not blocked)
            await self._outcome(PAGE, step, user, outcome)
            blocked = blocked or isinstance(outcome, Pending)

    async def _reminder(self) -> None:
        incident = self.incident
        user = incident.acknowledged_by
        if incident.status != Status.ACKNOWLEDGED or incident.reminded_at is None or not user:
            return
        if (REMINDER, incident.seq, user) in self.recorded:
            return
        content = incident_blocks.reminder(incident, incident.seq)
        new = self._new(
            REMINDER,
            f"reminder/{incident.seq}/{user}",
            content,
            f"reminder to {user}",
            user_id=user,
        )
        await self._send(REMINDER, incident.seq, user, new)

    def _out_of_date(self, copy: IncidentMessage) -> tuple[Message, int] | None:
        """What a copy should show now and the state that is (None: it shows it already).

        A checklist's state is the newest of its events (its ticks); any other's, the
        incident's seq. A thread line never changes."""
        incident = self.incident
        if copy.role == THREAD:
            checklist = self.checklists.get(copy.step)
            if checklist is None or copy.shown_seq >= checklist.last_event_id:
                return None
            return checklist_blocks.checklist(incident, checklist), checklist.last_event_id
        if copy.shown_seq >= incident.seq:
            return None
        if copy.role == REMINDER:
            return incident_blocks.reminder(incident, copy.step), incident.seq
        return incident_blocks.incident_card(incident), incident.seq

    async def _update_copies(self) -> None:
        for copy in self.messages:
            if copy.error or not copy.ts or not copy.channel:
                continue
            wanted = self._out_of_date(copy)
            if wanted is None:
                continue
            content, state = wanted
            new = self._new(
                "update",
                f"update/{copy.id}/{'e' if copy.role == THREAD else ''}{state}",
                content,
                f"{copy.role} copy in {copy.channel}",
                op=UPDATE,
                channel=copy.channel,
                ts=copy.ts,
            )
            outcome = await self.outbox.send(new)
            if isinstance(outcome, Pending):
                what = f"update of the {copy.role} in {copy.channel}"
                self.failures.append(Failure(f"{what}: {outcome.reason}", outcome.quiet))
                continue
            if isinstance(outcome, Refused):
                log.warning(
                    "%s: %s copy in %s cannot be updated (%s); leaving it",
                    self.name,
                    copy.role,
                    copy.channel,
                    outcome.error.error,
                )
            await asyncio.to_thread(self.store.mark_incident_message_shown, copy.id, state)

    async def _send(
        self,
        role: str,
        step: int,
        target: str,
        new: NewDelivery,
        *,
        attempt: bool = True,
        shown: int | None = None,
    ) -> Outcome:
        outcome = await self.outbox.send(new, attempt=attempt)
        await self._outcome(role, step, target, outcome, shown)
        return outcome

    async def _outcome(
        self, role: str, step: int, target: str, outcome: Outcome, shown: int | None = None
    ) -> None:
        """Record what became of one message (a Pending one is a failure of this pass);
        `shown` is the state it shows, when not the incident's seq (a checklist's)."""
        if isinstance(outcome, Sent) and outcome.ref is not None:
            await asyncio.to_thread(
                self.store.record_incident_message,
                self.incident.id,
                role=role,
                step=step,
                target=target,
                channel=outcome.ref.channel,
                ts=outcome.ref.ts,
                shown_seq=self.incident.seq if shown is None else shown,
            )
        elif isinstance(outcome, Refused):
            await self._refused(role, step, target, outcome.error)
        elif isinstance(outcome, Pending):
            self.failures.append(Failure(f"{_what(role, target)}: {outcome.reason}", outcome.quiet))
        elif isinstance(outcome, Dropped) and role == PAGE:
            log.info("%s: the page to %s was not sent: %s", self.name, target, outcome.reason)

    async def _refused(self, role: str, step: int, target: str, exc: ChatError) -> None:
        what = _what(role, target)
        fix = (
            "check slack.incidents_channel"
            if role in (CARD, THREAD)
            else ("check the user ids in escalation.levels")
        )
        log.error("%s: Slack refused %s for good (%s) — %s", self.name, what, exc.error, fix)
        await asyncio.to_thread(
            self.store.record_incident_message,
            self.incident.id,
            role=role,
            step=step,
            target=target,
            channel=None,
            ts=None,
            shown_seq=self.incident.seq,
            error=exc.error,
        )
        if role in (PAGE, REMINDER):
            await self.incidents.note(
                self.incident.id, f"Could not send {what}: Slack answered {exc.error}."
            )


def _what(role: str, target: str) -> str:
    return {
        CARD: f"the incident message in {target}",
        THREAD: f"a thread line in {target}",
        PAGE: f"the page to {target}",
        REMINDER: f"the reminder to {target}",
    }[role]
