"""Threshold alerts' buttons and timers; the alerts themselves come from the scheduled checks."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.runbook.alerts.alerts import REMIND_TIMER, SYNC_TIMER, UNSILENCE_TIMER, parse_silence_key
from bot.slack.access import Allow
from bot.slack.alerts import alert_blocks
from bot.slack.alerts.alerting import parse_alert_id
from bot.slack.dispatch import Context, action, timer
from bot.slack.services import Services
from bot.store import Timer

log = logging.getLogger(__name__)


async def _press(ctx: Context) -> None:
    """Ack at once; the press is applied on the workers and answered privately."""
    await ctx.ack()
    request = ctx.request

    async def work() -> str:
        reply = await ctx.services.alerting.press(request.name, request.text, ctx.user_id)
        if reply.denied:
            ctx.outcome = "denied"
        if reply.answer is not None:
            await ctx.reply_privately(reply.answer)
        return reply.result

    ctx.hand_off(work)


# Acknowledge, too, is for responders: it stops a Critical alert's reminders and tells everyone
# "someone is on it" — from a bystander that is the same harm as a silence.
@action(alert_blocks.ACKNOWLEDGE, "Acknowledge", allow=Allow("responders"))
async def acknowledge(ctx: Context) -> None:
    """Acknowledge: someone is on it; a Critical alert's reminders stop."""
    await _press(ctx)


@action(
    alert_blocks.SILENCE,
    "Silence",
    allow=Allow(
        "responders",
        then="a Critical alert of an environment with requires_approval: approvers only; at "
        "most alerts.silence_max from the silence's start",
    ),
)
async def silence(ctx: Context) -> None:
    """Silence: nothing posted, reminded or paged for this metric for alerts.silence_for."""
    await _press(ctx)


@action(alert_blocks.ESCALATE, "Escalate", allow=Allow("responders"))
async def escalate(ctx: Context) -> None:
    """Escalate: open an incident for the alert now (or show the one already open)."""
    await _press(ctx)


@timer(SYNC_TIMER)
async def sync(services: Services, due: Timer) -> None:
    """An alert changed: page, post or update its message, post its thread lines."""
    alert_id = parse_alert_id(due.key)
    if alert_id is None:
        log.error("alert sync timer #%d is malformed (%r); dropped", due.id, due.key)
        return
    await services.alerting.sync(alert_id)


@timer(REMIND_TIMER)
async def remind(services: Services, due: Timer) -> None:
    """A Critical alert is still open: a reminder in its thread, and the next one set."""
    alert_id = parse_alert_id(due.key)
    since = due.payload.get("since")
    if alert_id is None or not isinstance(since, str):
        log.error("alert reminder timer #%d is malformed (%r); dropped", due.id, due.key)
        return
    await services.alerts.remind(alert_id, since)


@timer(UNSILENCE_TIMER)
async def unsilence(services: Services, due: Timer) -> None:
    """A silence ran out: the alert's message shows it, and an open alert is posted again."""
    key = parse_silence_key(due.key)
    until = due.payload.get("until")
    try:
        moment = datetime.fromisoformat(until) if isinstance(until, str) else None
    except ValueError:
        moment = None
    if key is None or moment is None:
        log.error("alert silence timer #%d is malformed (%r); dropped", due.id, due.key)
        return
    await services.alerts.end_silence(*key, moment)
