"""Block Kit for threshold alerts: the alert message, its thread lines, the answers to presses.

One message per alert, edited in place as its severity moves and when it resolves: the
environment, the metric, the latest reading, the threshold, since when, a sparkline of the last
readings, and the buttons Acknowledge / Silence / Escalate (`alert_ack`, `alert_silence`,
`alert_escalate`; the value is the alert's record id). Readings come from EventMesh's own
answers and error texts, so they are escaped like any other outside text.
"""

from __future__ import annotations

from datetime import datetime

from bot.config import Config
from bot.runbook.alerts.alerts import CI
from bot.runbook.alerts.silences import holds
from bot.runbook.alerts.states import AlertState, Metric, Status, reading_text, threshold_text
from bot.runbook.incidents.escalation import incident_name
from bot.runbook.levels import Level
from bot.slack.blocks import (
    LEVEL_EMOJI,
    Block,
    button,
    context,
    duration_text,
    escape,
    message,
    notice,
    section,
    section_fields,
)
from bot.slack.chat import Message
from bot.slack.incidents.incident_blocks import at, span
from bot.slack.sparkline import sparkline
from bot.store import Alert, AlertEvent, AlertSilence

ACKNOWLEDGE = "alert_ack"
SILENCE = "alert_silence"
ESCALATE = "alert_escalate"

EVENT_EMOJI = {
    "raised": ":arrow_double_up:",
    "lowered": ":arrow_down:",
    "resolved": ":white_check_mark:",
    "flapping": ":repeat:",
    "settled": ":information_source:",
    "reminder": ":alarm_clock:",
    "unsilenced": ":bell:",
}


def scope(environment: str) -> str:
    return "CI builds" if environment == CI else environment


def title(alert: Alert) -> str:
    """staging · Health check response"""
    return f"{scope(alert.environment)} · {Metric(alert.metric).info.title}"


def _headline(alert: Alert) -> str:
    status = Status(alert.status)
    where = f"*{escape(scope(alert.environment))}* · {Metric(alert.metric).info.title}"
    if status == Status.RESOLVED:
        return f":white_check_mark: *Resolved* · {where}"
    if status == Status.FLAPPING:
        return f":repeat: *Flapping* · {where}"
    return f"{LEVEL_EMOJI[Level(alert.level)]} *{alert.level}* · {where}"


def _fallback(alert: Alert, reading: str, config: Config) -> str:
    metric = Metric(alert.metric)
    threshold = threshold_text(metric, metric.threshold(config.thresholds))
    status = Status(alert.status)
    head = {Status.RESOLVED: "Resolved", Status.FLAPPING: "Flapping"}.get(status, alert.level)
    return f"{head}: {escape(title(alert))} {escape(reading)} ({threshold})"


def alert_message(
    alert: Alert,
    state: AlertState | None,
    silence: AlertSilence | None,
    config: Config,
    now: datetime,
) -> Message:
    metric = Metric(alert.metric)
    threshold = metric.threshold(config.thresholds)
    reading = reading_text(metric, alert.value, alert.problem)
    status = Status(alert.status)
    fields = [f"*{'Last reading' if status == Status.RESOLVED else 'Now'}*\n{escape(reading)}"]
    fields.append(f"*Threshold*\n{threshold_text(metric, threshold)}")
    if status == Status.RESOLVED and alert.resolved_at is not None:
        lasted = span(alert.resolved_at - alert.opened_at)
        fields.append(
            f"*Was*\n{alert.peak_level} at worst, for {lasted} "
            f"({at(alert.opened_at)} – {at(alert.resolved_at)})"
        )
    else:
        since = f"*Since*\n{at(alert.opened_at)}"
        if alert.level_since != alert.opened_at and status == Status.FIRING:
            since += f"; {alert.level} since {at(alert.level_since)}"
        fields.append(since)
    if state is not None and state.readings:
        top = max([v for v in state.readings if v is not None] + [threshold.critical])
        line = sparkline(state.readings, low=0, high=top)
        fields.append(f"*Last {len(state.readings)} readings*\n`{line}`")
    if alert.detail:
        fields.append(f"*Detail*\n{escape(alert.detail)}")
    blocks: list[Block] = [section(_headline(alert)), section_fields(*fields)]
    notes = _notes(alert, silence, config, now)
    if notes:
        blocks.append(context(*notes))
    if status != Status.RESOLVED:
        silence_for = duration_text(min(config.alerts.silence_for, config.alerts.silence_max))
        value = str(alert.id)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"alert:{alert.id}",
                "elements": [
                    button("Acknowledge", ACKNOWLEDGE, value, "primary"),
                    button(f"Silence {silence_for}", SILENCE, value),
                    button("Escalate", ESCALATE, value, "danger"),
                ],
            }
        )
    return message(_fallback(alert, reading, config), blocks)


def _notes(alert: Alert, silence: AlertSilence | None, config: Config, now: datetime) -> list[str]:
    notes = []
    if alert.acked_by:
        assert alert.acked_at is not None
        notes.append(f":eyes: Acknowledged by <@{alert.acked_by}> at {at(alert.acked_at)}")
    if silence is not None and silence.until > now:
        if holds(silence, alert, config):
            notes.append(
                f":zzz: Silenced by <@{silence.silenced_by}> until {at(silence.until)}: "
                "nothing more is posted about it until then"
            )
        else:
            notes.append(
                f":zzz: Silenced by <@{silence.silenced_by}> until {at(silence.until)}, but not "
                f"while Critical: in {escape(alert.environment)} only an approver's silence "
                "holds its pages"
            )
    if alert.incident_id is not None:
        notes.append(f":rotating_light: Incident {incident_name(alert.incident_id)}")
    if Status(alert.status) == Status.FLAPPING:
        window = span(config.alerts.flapping_window)
        notes.append(
            f":repeat: Changing level too often; quiet here until it has been stable for {window}"
        )
    elif (
        Status(alert.status) == Status.FIRING
        and alert.level == Level.CRITICAL
        and not alert.acked_by
    ):
        notes.append(
            f":alarm_clock: Reminded every {span(config.alerts.repeat_every)} until "
            "acknowledged or resolved"
        )
    return notes


def thread_line(event: AlertEvent) -> Message:
    emoji = EVENT_EMOJI.get(event.kind, ":information_source:")
    text = f"{emoji} {escape(event.detail)} ({at(event.at)})"
    return message(f"{escape(event.detail)} ({at(event.at)})", [section(text)])


def incident_summary(alert: Alert) -> str:
    """What the incident opened for an alert is called."""
    metric = Metric(alert.metric)
    reading = reading_text(metric, alert.value, alert.problem)
    return f"{alert.level} alert: {title(alert)}: {reading}"


def incident_note(alert: Alert) -> str:
    """The line on the incident when its alert resolves."""
    metric = Metric(alert.metric)
    reading = reading_text(metric, alert.value, alert.problem)
    lasted = (
        span(alert.resolved_at - alert.opened_at) if alert.resolved_at is not None else "a while"
    )
    return f"Alert resolved: {title(alert)} back to Normal ({reading}) after {lasted}."


# --- answers to presses (only the presser sees them) -------------------------------------------


def silenced(
    alert: Alert, silence: AlertSilence, config: Config, *, changed: bool, capped: bool
) -> Message:
    longest = duration_text(config.alerts.silence_max)
    began = at(silence.silenced_at)
    if not changed:
        return notice(
            f":zzz: {escape(title(alert))} is already silenced until {at(silence.until)}, "
            f"{longest} after the silence began ({began}): the most alerts.silence_max allows. "
            "Acknowledge or Escalate it instead."
        )
    cap = (
        f" (capped: a silence lasts at most {longest} from when it began, {began} — "
        "alerts.silence_max)"
        if capped
        else ""
    )
    return notice(
        f":zzz: {escape(title(alert))} silenced until {at(silence.until)}{cap}: no posts, "
        "reminders or pages for it until then. The checks go on; the message still shows where "
        "it stands."
    )


def escalated(alert: Alert, incident_id: int, created: bool, channel: str | None) -> Message:
    name = incident_name(incident_id)
    where = f" in <#{channel}>" if channel else ""
    if created:
        return notice(f":rotating_light: {name} opened for {escape(title(alert))}{where}.")
    return notice(f":rotating_light: {name} is already open for this alert{where}.")
