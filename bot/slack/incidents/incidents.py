"""Incidents in Slack: open one, press its buttons, and post what each step needs.

`Incidents.open_incident` is the one way in — /escalate, a critical alert and a failed
rollback all open incidents through it. Opening and every later change are store
transactions (bot/runbook/escalation.py) that also set an `incident.sync` timer; the timer's
handler, `sync`, brings Slack up to date with the incident:

1. the card in the incidents channel, posted once;
2. a thread line for every step of the timeline not yet in the thread, in order;
3. a page (DM) to each person of the level being paged, once per paging step;
4. the reminder to the acknowledger, once per reminder;
5. every copy already posted — the card, each page, each reminder — updated to the current
   state, so no one is left looking at a live button for a closed incident.

Each message is recorded once Slack accepted it, so a retry posts only what is missing. A
message Slack refused for a passing reason (rate limited, down) fails the sync, and the timer
runs it again with backoff: late, never dropped. One Slack refuses for good (no such user) is
recorded, noted on the timeline, logged at ERROR, and not tried again. (Slack has no
idempotency key: if the bot dies between Slack accepting a page and the record of it, the
page goes out again on restart — twice rather than never.)
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.incidents.escalation import (
    DEFAULT_SEVERITY,
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
    parse_incident_name,
    plan_of,
)
from bot.scheduler import DEFAULT_LEASE, RetryLater, Scheduler, renewed
from bot.slack.chat import Chat, ChatError, Message, MessageRef
from bot.slack.incidents import incident_blocks
from bot.store import Incident, IncidentEvent, IncidentMessage, Store, Timer

log = logging.getLogger(__name__)

CARD, THREAD, PAGE, REMINDER = "card", "thread", "page", "reminder"
# Short and renewed while posting: a poster that died delays the next by at most this.
SYNC_LEASE = DEFAULT_LEASE
MAX_SYNC_ROUNDS = 5

# Slack's answers that will not change by trying again: the target or the content is wrong.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "user_not_found",
        "user_disabled",
        "user_not_visible",
        "cannot_dm_bot",
        "users_list_not_supplied",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "restricted_action",
    }
)

_LINK = re.compile(r"https?://[^\s<>|]{1,2000}")


class DeliveryFailed(Exception):
    """Something for an incident could not be posted now; the sync timer tries again."""


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
        chat: Chat,
        scheduler: Scheduler,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.chat = chat
        self.clock = clock
        self.owner = scheduler.owner
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
    ) -> tuple[Incident, bool]:
        """Open an incident and page the escalation path; returns (incident, created).

        It goes to `slack.incidents_channel`, else to `channel` (where /escalate was typed),
        else to `slack.alerts_channel`. `source` says what opened it ("/escalate", "alert",
        "rollback"); `link` (http/https) points at the details. With `dedupe_key`, an
        unresolved incident already opened with that key is returned instead of a new one.
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
        answer = incident_blocks.press_answer(result, value)
        name = incident_name(incident_id)
        if result is None:
            return PressReply(answer, f"{name}: no such incident")
        outcome = {Changed: "done", Stale: "stale", PressRefused: "refused", NotAllowed: "denied"}
        return PressReply(
            answer,
            f"{name} {action.value}: {outcome[type(result)]} (now {result.incident.status})",
            denied=isinstance(result, NotAllowed),
        )

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
        """Bring Slack up to date with the incident. Raises DeliveryFailed to be retried."""
        async with self._locks.hold(incident_id):
            now = self.clock()
            leased = await asyncio.to_thread(
                self.store.lease_incident_sync, incident_id, self.owner, now, SYNC_LEASE
            )
            if not leased:
                raise RetryLater(f"{incident_name(incident_id)} is being posted by another bot")
            try:
                async with renewed(
                    lambda: asyncio.to_thread(
                        self.store.lease_incident_sync,
                        incident_id,
                        self.owner,
                        self.clock(),
                        SYNC_LEASE,
                    ),
                    SYNC_LEASE / 3,
                ):
                    await self._sync_rounds(incident_id)
            finally:
                await asyncio.to_thread(self.store.release_incident_sync, incident_id, self.owner)

    async def _sync_rounds(self, incident_id: int) -> None:
        failures: list[str] = []
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
        if failures:
            raise DeliveryFailed(f"{incident_name(incident_id)}: " + "; ".join(failures))


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
        self.chat = incidents.chat
        self.store = incidents.store
        self.incident = incident
        self.plan = plan_of(incident)
        self.events = events
        self.messages = messages
        self.recorded = {(m.role, m.step, m.target): m for m in messages}
        self.failures: list[str] = []
        self.name = incident_name(incident.id)

    async def run(self) -> list[str]:
        card = await self._card()
        if card is not None:
            await self._thread(card)
        await self._pages()
        await self._reminder()
        await self._update_copies()
        return self.failures

    async def _card(self) -> IncidentMessage | MessageRef | None:
        channel = self.incident.channel
        if channel is None:
            return None
        existing = self.recorded.get((CARD, 0, channel))
        if existing is not None:
            return existing if existing.ts else None
        content = incident_blocks.incident_card(self.incident)
        ref = await self._post(CARD, 0, channel, self.chat.post(channel, content))
        return ref

    async def _thread(self, card: IncidentMessage | MessageRef) -> None:
        channel, ts = card.channel, card.ts
        assert channel is not None and ts is not None
        for event in self.events:
            if event.kind == Step.OPENED or (THREAD, event.id, channel) in self.recorded:
                continue
            line = incident_blocks.timeline_line(event, self.incident)
            if line is None:
                continue
            failed_before = len(self.failures)
            await self._post(THREAD, event.id, channel, self.chat.post(channel, line, thread_ts=ts))
            if len(self.failures) > failed_before:
                return  # keep the thread in order: the rest waits for the retry

    async def _pages(self) -> None:
        incident = self.incident
        if incident.status != Status.TRIGGERED or not self.plan.levels:
            return
        for user in await self.incidents.escalations.paged_people(incident, self.events):
            if (PAGE, incident.paged_seq, user) in self.recorded:
                continue
            content = incident_blocks.page(incident)
            await self._post(PAGE, incident.paged_seq, user, self.chat.dm(user, content))

    async def _reminder(self) -> None:
        incident = self.incident
        user = incident.acknowledged_by
        if incident.status != Status.ACKNOWLEDGED or incident.reminded_at is None or not user:
            return
        if (REMINDER, incident.seq, user) in self.recorded:
            return
        content = incident_blocks.reminder(incident, incident.seq)
        await self._post(REMINDER, incident.seq, user, self.chat.dm(user, content))

    async def _update_copies(self) -> None:
        incident = self.incident
        for copy in self.messages:
            if copy.role == THREAD or copy.error or not copy.ts or not copy.channel:
                continue
            if copy.shown_seq >= incident.seq:
                continue
            if copy.role == REMINDER:
                content = incident_blocks.reminder(incident, copy.step)
            else:
                content = incident_blocks.incident_card(incident)
            try:
                await self.chat.update(MessageRef(copy.channel, copy.ts), content)
            except Exception as exc:
                if _permanent(exc):
                    log.warning(
                        "%s: %s copy in %s cannot be updated (%s); leaving it",
                        self.name,
                        copy.role,
                        copy.channel,
                        _describe(exc),
                    )
                else:
                    self.failures.append(
                        f"update of the {copy.role} in {copy.channel}: {_describe(exc)}"
                    )
                    continue
            await asyncio.to_thread(self.store.mark_incident_message_shown, copy.id, incident.seq)

    async def _post(
        self, role: str, step: int, target: str, sending: Awaitable[MessageRef]
    ) -> MessageRef | None:
        """Await one post or DM and record it; None if Slack refused it."""
        try:
            ref = await sending
        except Exception as exc:
            await self._refused(role, step, target, exc)
            return None
        await asyncio.to_thread(
            self.store.record_incident_message,
            self.incident.id,
            role=role,
            step=step,
            target=target,
            channel=ref.channel,
            ts=ref.ts,
            shown_seq=self.incident.seq,
        )
        return ref

    async def _refused(self, role: str, step: int, target: str, exc: Exception) -> None:
        what = {
            CARD: f"the incident message in {target}",
            THREAD: f"a thread line in {target}",
            PAGE: f"the page to {target}",
            REMINDER: f"the reminder to {target}",
        }[role]
        if not _permanent(exc):
            self.failures.append(f"{what}: {_describe(exc)}")
            return
        fix = (
            "check slack.incidents_channel"
            if role in (CARD, THREAD)
            else ("check the user ids in escalation.levels")
        )
        log.error("%s: Slack refused %s for good (%s) — %s", self.name, what, _describe(exc), fix)
        await asyncio.to_thread(
            self.store.record_incident_message,
            self.incident.id,
            role=role,
            step=step,
            target=target,
            channel=None,
            ts=None,
            shown_seq=self.incident.seq,
            error=_describe(exc),
        )
        if role in (PAGE, REMINDER):
            await self.incidents.note(
                self.incident.id, f"Could not send {what}: Slack answered {_describe(exc)}."
            )


def _permanent(exc: Exception) -> bool:
    return isinstance(exc, ChatError) and exc.error in PERMANENT_ERRORS


def _describe(exc: Exception) -> str:
    if isinstance(exc, ChatError):
        return exc.error
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
