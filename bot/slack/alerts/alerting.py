"""Threshold alerts in Slack: bring an alert's message up to date, and its buttons.

Every alert change (bot/runbook/alerts.py) is written with an `alert.sync` timer; its handler,
`sync`, makes Slack show the alert as it is now:

1. a Critical alert pages first, with `alerts.page_on_critical`: an incident through
   Incidents.open_incident (the /escalate path; one per alert, by dedupe key), recorded on the
   alert. Incidents post through the paced chat's page lane, so they never wait behind alerts;
2. the message in `slack.alerts_channel`, posted once (routine lane, paced), then edited in
   place whenever the alert changed since (severity, resolution, acknowledgement, silence,
   incident);
3. the pending thread lines (raised, lowered, resolved, flapping, reminders), in order, once;
4. a resolved alert that paged notes its resolution on the incident.

While the alert's metric is silenced nothing is posted for it — no new message, no thread line,
no page — but a message already posted is still edited to show where things stand. Each step
is recorded as soon as Slack accepted it, so a retry (the timer's backoff after Slack failed)
and a restart post only what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import re

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.alerts.alerts import Alerts, Metric, Status
from bot.runbook.levels import Level
from bot.slack import blocks
from bot.slack.alerts import alert_blocks
from bot.slack.chat import Chat, ChatError, Message, MessageRef
from bot.slack.incidents.incidents import (
    PERMANENT_ERRORS,
    DeliveryFailed,
    Incidents,
    KeyedLocks,
    PressReply,
)
from bot.store import Alert, Store

log = logging.getLogger(__name__)

MAX_SYNC_ROUNDS = 5
_ALERT_ID = re.compile(r"[1-9][0-9]{0,9}")


def parse_alert_id(value: str) -> int | None:
    return int(value) if _ALERT_ID.fullmatch(value.strip()) else None


class Alerting:
    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat,
        alerts: Alerts,
        incidents: Incidents,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.chat = chat
        self.alerts = alerts
        self.incidents = incidents
        self.clock = clock
        self._locks = KeyedLocks()
        self._warned_no_channel = False

    # --- bringing Slack up to date ----------------------------------------------------------

    async def sync(self, alert_id: int) -> None:
        """Make Slack show the alert as it is. Raises DeliveryFailed to be tried again."""
        async with self._locks.hold(alert_id):
            for _ in range(MAX_SYNC_ROUNDS):
                alert = await self.alerts.get(alert_id)
                if alert is None:
                    return
                if not await self._round(alert):
                    return

    async def _round(self, alert: Alert) -> bool:
        """One pass; True if the alert changed meanwhile (another pass shows that too)."""
        seen = alert.version
        # A silence that does not hold this alert (production's Critical, silenced by someone
        # who is not an approver: silences.py) is no silence for its pages and posts.
        silence = await self.alerts.holding_silence(alert)
        if (
            self.config.alerts.page_on_critical
            and alert.status == Status.FIRING
            and alert.level == Level.CRITICAL
            and alert.incident_id is None
            and silence is None
        ):
            await self._page(alert)
            return True
        failures: list[str] = []
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
        if failures:
            raise DeliveryFailed(f"alert {alert.id}: " + "; ".join(failures))
        latest = await self.alerts.get(alert.id)
        return latest is not None and latest.version != seen

    async def _page(self, alert: Alert) -> None:
        incident, _ = await self.incidents.open_incident(
            alert_blocks.incident_summary(alert),
            1,
            "alert",
            dedupe_key=_dedupe_key(alert),
        )
        await self.alerts.link_incident(alert.id, incident.id)

    async def _message(self, alert: Alert, silenced: bool, failures: list[str]) -> Alert:
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
            try:
                ref = await self.chat.post(channel, content)
            except Exception as exc:
                if not _permanent(exc):
                    failures.append(f"the alert message: {_describe(exc)}")
                    return alert
                log.error(
                    "Slack refused the alert message in %s for good (%s) — check "
                    "slack.alerts_channel",
                    channel,
                    _describe(exc),
                )
                await asyncio.to_thread(
                    self.store.record_alert_message,
                    alert.id,
                    channel=channel,
                    ts=None,
                    shown_version=alert.version,
                    error=_describe(exc),
                )
                return alert
            await asyncio.to_thread(
                self.store.record_alert_message,
                alert.id,
                channel=ref.channel,
                ts=ref.ts,
                shown_version=alert.version,
            )
            return await self.alerts.get(alert.id) or alert
        if alert.shown_version >= alert.version or alert.channel is None:
            return alert
        content = await self._content(alert)
        try:
            await self.chat.update(_ref(alert), content)
        except Exception as exc:
            if not _permanent(exc):
                failures.append(f"the update of the alert message: {_describe(exc)}")
                return alert
            log.warning("alert %d's message cannot be updated (%s)", alert.id, _describe(exc))
        await asyncio.to_thread(self.store.mark_alert_shown, alert.id, alert.version)
        return alert

    async def _thread(self, alert: Alert, silenced: bool, failures: list[str]) -> None:
        events = await asyncio.to_thread(self.store.alert_events, alert.id, pending=True)
        for event in events:
            if alert.ts is not None and alert.channel is not None and not silenced:
                try:
                    await self.chat.post(
                        alert.channel, alert_blocks.thread_line(event), thread_ts=alert.ts
                    )
                except Exception as exc:
                    if not _permanent(exc):
                        failures.append(f"a thread line: {_describe(exc)}")
                        return  # keep the thread in order: the rest waits for the retry
                    log.warning("alert %d: thread line refused (%s)", alert.id, _describe(exc))
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
        severity = 1 if alert.level == Level.CRITICAL else 2
        incident, created = await self.incidents.open_incident(
            alert_blocks.incident_summary(alert),
            severity,
            "alert",
            opened_by=user_id,
            dedupe_key=_dedupe_key(alert),
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


def _ref(alert: Alert) -> MessageRef:
    assert alert.channel is not None and alert.ts is not None
    return MessageRef(alert.channel, alert.ts)


def _permanent(exc: Exception) -> bool:
    return isinstance(exc, ChatError) and exc.error in PERMANENT_ERRORS


def _describe(exc: Exception) -> str:
    if isinstance(exc, ChatError):
        return exc.error
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
