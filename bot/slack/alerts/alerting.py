"""Threshold alerts in Slack: bring an alert's message up to date, and its buttons.

Every alert change (bot/runbook/alerts.py) is written with an `alert.sync` timer; its handler,
`sync`, makes Slack show the alert as it is now:

1. a Critical alert pages first where the environment's paging policy says so (Config.paging:
   page_on_critical and severity per environment): an incident through
   Incidents.open_incident (the /escalate path; one per alert, by dedupe key), recorded on the
   alert. Incidents post through the paced chat's page lane, so they never wait behind alerts;
2. the message in `slack.alerts_channel`, posted once (routine lane, paced), then edited in
   place whenever the alert changed since (severity, resolution, acknowledgement, silence,
   incident);
3. the pending thread lines (raised, lowered, resolved, flapping, reminders), in order, once;
4. a resolved alert that paged notes its resolution on the incident.

While the alert's metric is silenced nothing is posted for it — no new message, no thread line,
no page — but a message already posted is still edited to show where things stand. Every
message goes through the outbox (bot/slack/outbox.py, routine lane): it is a row before it is a
message, carries its key (so a post whose answer was lost is found, not posted twice), and
waits there while Slack is away; the outbox has the alert synced again when it delivered it.
Each step is recorded as soon as Slack accepted it, so a retry and a restart post only what is
missing. One replica at a time posts about an alert: a 15 s posting lease, renewed while the
sync runs.
"""

from __future__ import annotations

import asyncio
import logging
import re

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.alerts.alerts import SYNC_TIMER, Alerts
from bot.runbook.alerts.states import Metric, Status
from bot.runbook.levels import Level
from bot.slack import blocks
from bot.slack.alerts import alert_blocks
from bot.slack.chat import Chat, Message
from bot.slack.delivery import Pending, Refused, Sent
from bot.slack.incidents.incidents import (
    Failure,
    Incidents,
    KeyedLocks,
    PressReply,
    check_delivered,
)
from bot.slack.outbox import Outbox, outbox_of
from bot.slack.posting_lease import POSTING_LEASE, posting_lease
from bot.store import LANE_ROUTINE, Alert, Delivery, NewDelivery, Store
from bot.store.outbox import UPDATE

log = logging.getLogger(__name__)

MAX_SYNC_ROUNDS = 5
LEASE = POSTING_LEASE
_ALERT_ID = re.compile(r"[1-9][0-9]{0,9}")


def parse_alert_id(value: str) -> int | None:
    return int(value) if _ALERT_ID.fullmatch(value.strip()) else None


class Alerting:
    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat | Outbox,
        alerts: Alerts,
        incidents: Incidents,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox_of(chat, store, clock)
        self.outbox.on_delivered("alert-", self._delivered)
        self.alerts = alerts
        self.incidents = incidents
        self.clock = clock
        self._locks = KeyedLocks()
        self._warned_no_channel = False

    # --- bringing Slack up to date ----------------------------------------------------------

    async def sync(self, alert_id: int) -> None:
        """Make Slack show the alert as it is. Raises DeliveryFailed or SlackAway (a
        RetryLater) to be tried again."""
        subject = _subject(alert_id)
        owner = self.outbox.owner

        async def take() -> bool:
            return await asyncio.to_thread(self.store.take_posting_lease, subject, owner, LEASE)

        async def release() -> None:
            await asyncio.to_thread(self.store.release_posting_lease, subject, owner)

        async with self._locks.hold(alert_id), posting_lease(f"alert {alert_id}", take, release):
            for _ in range(MAX_SYNC_ROUNDS):
                alert = await self.alerts.get(alert_id)
                if alert is None:
                    return
                if not await self._round(alert):
                    return

    async def _delivered(self, row: Delivery) -> None:
        """The outbox delivered an alert's message on its own (Slack came back): sync it."""
        alert_id = parse_alert_id((row.subject or "").removeprefix("alert-"))
        if alert_id is not None:
            await self.incidents.scheduler.schedule(SYNC_TIMER, str(alert_id), self.clock())

    async def _round(self, alert: Alert) -> bool:
        """One pass; True if the alert changed meanwhile (another pass shows that too)."""
        seen = alert.version
        # A silence that does not hold this alert (production's Critical, silenced by someone
        # who is not an approver: silences.py) is no silence for its pages and posts.
        silence = await self.alerts.holding_silence(alert)
        if (
            self.config.paging(alert.environment).page
            and alert.status == Status.FIRING
            and alert.level == Level.CRITICAL
            and alert.incident_id is None
            and silence is None
        ):
            await self._page(alert)
            return True
        failures: list[Failure] = []
        alert = await self._message(alert, silence is not None, failures)
        if not failures:
            await self._thread(alert, silence is not None, failures)
        if (
            alert.status == Status.RESOLVED
            and alert.incident_id is not None
            and not alert.incident_noted
        ):
            await self.incidents.note(alert.incident_id, alert_blocks.incident_note(alert))
            await self.alerts.mark_incident_noted(alert.id)
        check_delivered(f"alert {alert.id}", failures, self.outbox)
        latest = await self.alerts.get(alert.id)
        return latest is not None and latest.version != seen

    async def _page(self, alert: Alert) -> None:
        incident, _ = await self.incidents.open_incident(
            alert_blocks.incident_summary(alert),
            self.config.paging(alert.environment).severity,
            "alert",
            dedupe_key=_dedupe_key(alert),
            environment=alert.environment,
        )
        await self.alerts.link_incident(alert.id, incident.id)

    def _new(self, alert: Alert, key: str, content: Message, **where: object) -> NewDelivery:
        subject = _subject(alert.id)
        return NewDelivery(
            key=f"{subject}/{key}",
            kind="alert",
            lane=LANE_ROUTINE,
            text=content.text,
            blocks=content.blocks,
            subject=subject,
            about=f"alert {alert.id} ({alert.environment} {alert.metric}) {key}",
            **where,  # type: ignore[arg-type]
        )

    async def _message(self, alert: Alert, silenced: bool, failures: list[Failure]) -> Alert:
        channel = self.config.slack.alerts_channel
        if alert.ts is None:
            if alert.post_error is not None or alert.status == Status.RESOLVED or silenced:
                return alert  # refused for good, over before it was shown, or silenced
            if channel is None:
                if not self._warned_no_channel:
                    log.error(
                        "alerts fire but are not posted: set slack.alerts_channel in the config"
                    )
                    self._warned_no_channel = True
                return alert
            content = await self._content(alert)
            outcome = await self.outbox.send(self._new(alert, "message", content, channel=channel))
            if isinstance(outcome, Pending):
                failures.append(Failure(f"the alert message: {outcome.reason}", outcome.quiet))
                return alert
            if isinstance(outcome, Refused):
                log.error(
                    "Slack refused the alert message in %s for good (%s) — check "
                    "slack.alerts_channel",
                    channel,
                    outcome.error.error,
                )
            ref = outcome.ref if isinstance(outcome, Sent) else None
            await asyncio.to_thread(
                self.store.record_alert_message,
                alert.id,
                channel=ref.channel if ref else channel,
                ts=ref.ts if ref else None,
                shown_version=alert.version,
                error=None if ref else _why_not(outcome),
            )
            return await self.alerts.get(alert.id) or alert
        if alert.shown_version >= alert.version or alert.channel is None:
            return alert
        content = await self._content(alert)
        update = self._new(
            alert, f"update/{alert.version}", content, op=UPDATE, channel=alert.channel, ts=alert.ts
        )
        outcome = await self.outbox.send(update)
        if isinstance(outcome, Pending):
            what = f"the update of the alert message: {outcome.reason}"
            failures.append(Failure(what, outcome.quiet))
            return alert
        if isinstance(outcome, Refused):
            log.warning("alert %d's message cannot be updated (%s)", alert.id, outcome.error.error)
        await asyncio.to_thread(self.store.mark_alert_shown, alert.id, alert.version)
        return alert

    async def _thread(self, alert: Alert, silenced: bool, failures: list[Failure]) -> None:
        events = await asyncio.to_thread(self.store.alert_events, alert.id, pending=True)
        waiting = False  # keep the thread in order: after a line that did not go, the rest wait
        for event in events:
            if alert.ts is not None and alert.channel is not None and not silenced:
                line = self._new(
                    alert,
                    f"event/{event.id}",
                    alert_blocks.thread_line(event),
                    channel=alert.channel,
                    thread_ts=alert.ts,
                )
                outcome = await self.outbox.send(line, attempt=not waiting)
                if isinstance(outcome, Pending):
                    if not waiting:
                        failures.append(Failure(f"a thread line: {outcome.reason}", outcome.quiet))
                    waiting = True
                    continue
                if isinstance(outcome, Refused):
                    log.warning("alert %d: thread line refused (%s)", alert.id, outcome.error.error)
            # Posted, or nowhere to post it (silenced, or the alert never shown): done.
            await asyncio.to_thread(self.store.finish_alert_event, event.id)

    async def _content(self, alert: Alert) -> Message:
        state = await self.alerts.state(alert.environment, Metric(alert.metric))
        silence = await self.alerts.silence_of(alert.environment, alert.metric)
        return alert_blocks.alert_message(alert, state, silence, self.config, self.clock())

    # --- buttons ----------------------------------------------------------------------------

    async def press(self, action_id: str, value: str, user_id: str) -> PressReply:
        alert_id = parse_alert_id(value)
        if alert_id is None:
            return PressReply(blocks.notice("That is not an alert."), "no such alert")
        if action_id == alert_blocks.ACKNOWLEDGE:
            pressed = await self.alerts.acknowledge(alert_id, user_id)
            outcome = "acknowledged" if pressed.changed else "unchanged"
            note = f"{pressed.note} by <@{pressed.by}>." if pressed.by else pressed.note
            return PressReply(blocks.notice(note), f"alert {alert_id} {outcome}")
        alert = await self.alerts.get(alert_id)
        if alert is None:
            return PressReply(blocks.notice("That alert is not on record."), "no such alert")
        if action_id == alert_blocks.SILENCE:
            return await self._silence(alert, user_id)
        # Escalate: an incident for this alert now, whatever its level (an older copy of a
        # resolved alert's message may still show the button).
        if alert.status == Status.RESOLVED:
            answer = blocks.notice("That alert is already resolved: nothing to escalate.")
            return PressReply(answer, f"alert {alert_id} already resolved")
        severity = self.config.paging(alert.environment).severity
        if alert.level != Level.CRITICAL:
            severity = max(severity, 2)
        incident, created = await self.incidents.open_incident(
            alert_blocks.incident_summary(alert),
            severity,
            "alert",
            opened_by=user_id,
            dedupe_key=_dedupe_key(alert),
            environment=alert.environment,
        )
        await self.alerts.link_incident(alert_id, incident.id)
        return PressReply(
            alert_blocks.escalated(alert, incident.id, created, incident.channel),
            f"alert {alert_id} escalated to incident {incident.id}",
        )

    async def _silence(self, alert: Alert, user_id: str) -> PressReply:
        pressed = await self.alerts.silence(alert.id, user_id)
        what = f"{alert.environment}/{alert.metric}"
        if pressed.denied:
            return PressReply(blocks.notice(pressed.note), f"{what}: silence refused", denied=True)
        assert pressed.silence is not None
        until = f"{pressed.silence.until:%H:%M}"
        answer = alert_blocks.silenced(
            alert, pressed.silence, self.config, changed=pressed.changed, capped=pressed.capped
        )
        if not pressed.changed:
            return PressReply(answer, f"{what} already silenced until {until} (silence_max)")
        capped = " (capped by alerts.silence_max)" if pressed.capped else ""
        return PressReply(answer, f"{what} silenced until {until}{capped}")


def _dedupe_key(alert: Alert) -> str:
    return f"alert:{alert.environment}:{alert.metric}"


def _subject(alert_id: int) -> str:
    return f"alert-{alert_id}"


def _why_not(outcome: object) -> str:
    return outcome.error.error if isinstance(outcome, Refused) else "not posted"
