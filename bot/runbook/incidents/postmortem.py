"""The post-mortem draft of an incident: Markdown, from what the bot recorded around it.

The runbook ends its recovery procedures with "Post-mortem analysis" and its rollback
checklist with "Document incident": this writes the first draft of that document, in the
usual shape — summary, impact, timeline, what went well, what to improve, action items — from
the facts gathered by bot/runbook/incidents/postmortem_facts.py: who or what opened it, every
page and acknowledgement, the alerts and their readings, diagnoses, deploys and rollbacks of
its environment, checklist ticks and notes, the resolution; time to acknowledge and to
resolve. What only people know (the impact on users, the causes, the actions) is left for
them, marked so.

`compose(facts, now)` is a pure function of the facts and the clock: nothing here reads the
store or knows Slack.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.redaction import redact
from bot.runbook.alerts.states import METRICS, Metric, reading_text
from bot.runbook.incidents.escalation import (
    BY_BUTTON,
    Step,
    incident_name,
    plan_of,
    time_to_acknowledge,
    time_to_resolve,
)
from bot.runbook.incidents.postmortem_facts import AlertFact, PostmortemFacts
from bot.store import AuditEntry, Deployment, IncidentEvent

TO_FILL = "_(to be filled in by the responders)_"
MAX_DETAIL = 300  # characters of a note, a diagnosis' answer or a summary in a timeline line


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    text: str


def compose(facts: PostmortemFacts, now: datetime) -> str:
    """The post-mortem draft of the incident in `facts`, as of `now`, in Markdown."""
    incident = facts.incident
    name = incident_name(incident.id)
    lines = [
        f"# Post-mortem draft: {name} — {_plain(incident.summary)}",
        "",
        f"_Drafted by the EventMesh bot at {_stamp(now)} from what it recorded; a draft to "
        "edit and complete, not a finding. Times are UTC; (+m:ss) counts from the opening._",
        "",
        "## Summary",
        "",
        *_summary(facts, now),
        "",
        "## Impact",
        "",
        *_impact(facts, now),
        "",
        "## Timeline",
        "",
        *(f"- {_when(e.at, incident.opened_at)} — {e.text}" for e in timeline(facts)),
        "",
        "## What went well",
        "",
        *_bullets(went_well(facts)),
        f"- {TO_FILL}",
        "",
        "## What to improve",
        "",
        *_bullets(to_improve(facts)),
        f"- {TO_FILL}",
        "",
        "## Root cause",
        "",
        TO_FILL,
        "",
        "## Action items",
        "",
        "| Action | Owner | Due |",
        "| --- | --- | --- |",
        "|  |  |  |",
        "|  |  |  |",
        "|  |  |  |",
        "",
    ]
    return redact("\n".join(lines))


# --- the sections ---------------------------------------------------------------------------


def _summary(facts: PostmortemFacts, now: datetime) -> list[str]:
    incident = facts.incident
    plan = plan_of(incident)
    where = facts.environment or "not recorded"
    if facts.environment and facts.environment_from:
        where += f" (from {facts.environment_from})"
    lines = [
        f"- **Incident:** {incident_name(incident.id)}, SEV {incident.severity}: "
        f"{_plain(incident.summary)}",
        f"- **Environment:** {where}",
        f"- **Opened:** {_stamp(incident.opened_at)}, {_opened_by(facts)}",
    ]
    tta = time_to_acknowledge(incident)
    acker = _first_acknowledger(facts.events)
    if tta is not None:
        by = f" by {_user(acker)}" if acker else ""
        lines.append(f"- **Time to acknowledge:** {span(tta)}{by}")
    else:
        lines.append("- **Time to acknowledge:** never acknowledged")
    ttr = time_to_resolve(incident)
    if ttr is not None and incident.resolved_at is not None:
        by = f" by {_user(incident.resolved_by)}" if incident.resolved_by else ""
        lines.append(
            f"- **Time to resolve:** {span(ttr)} (resolved {_stamp(incident.resolved_at)}{by})"
        )
    else:
        lines.append(
            f"- **Time to resolve:** not resolved yet ({span(now - incident.opened_at)} open)"
        )
    if plan.levels:
        top = plan.levels[incident.top_level].name
        people = len({page.user_id for page in facts.pages})
        lines.append(
            f"- **Escalation:** reached level {incident.top_level + 1} of {len(plan.levels)} "
            f"({top}); {_count(len(facts.pages), 'page')} to {_count(people, 'person', 'people')}"
        )
    return lines


def _impact(facts: PostmortemFacts, now: datetime) -> list[str]:
    lines = []
    for fact in facts.alerts:
        alert = fact.alert
        ended = alert.resolved_at or now
        lasted = span(ended - alert.opened_at)
        still = "" if alert.resolved_at else ", still firing"
        lines.append(
            f"- Alert: {_metric_title(alert.metric)} on {alert.environment}, peak "
            f"{alert.peak_level}, for {lasted}{still} (last reading "
            f"{_reading(alert.metric, alert.value, alert.problem)})"
        )
    for deployment in facts.deployments:
        lines.append(f"- {_run_name(deployment)}: {_state(deployment)}")
    lines.append(f"- Users, requests or data affected: {TO_FILL}")
    return lines


def timeline(facts: PostmortemFacts) -> list[Entry]:
    """Everything the bot saw, oldest first; at the same second, the incident's own timeline,
    then its pages, alerts, deploys and diagnoses."""
    entries: list[Entry] = []
    plan = plan_of(facts.incident)
    names = [level.name for level in plan.levels]
    for event in facts.events:
        entry = _event_entry(event, facts, names)
        if entry is not None:
            entries.append(entry)
    for page in facts.pages:
        level = f"level {page.level + 1}" + (
            f", {names[page.level]}" if page.level < len(names) else ""
        )
        text = f"Paged {_user(page.user_id)} ({level})"
        if page.delivered_at is None:
            text += f": not delivered ({page.state})"
        elif page.delivered_at - page.due_at > timedelta(minutes=1):
            text += f": delivered late, at {_clock(page.delivered_at)}"
        entries.append(Entry(page.due_at, text))
    for fact in facts.alerts:
        entries += _alert_entries(fact)
    for deployment in facts.deployments:
        entries += _deployment_entries(deployment)
    entries += [_diagnosis_entry(entry) for entry in facts.diagnoses]
    return sorted(entries, key=lambda entry: entry.at)


def went_well(facts: PostmortemFacts) -> list[str]:
    incident = facts.incident
    plan = plan_of(incident)
    good = []
    tta = time_to_acknowledge(incident)
    first_wait = plan.wait_at(0)
    if tta is not None and (first_wait is None or tta <= first_wait):
        good.append(f"Acknowledged within {span(tta)}, before the next level was paged.")
    for deployment in facts.deployments:
        if deployment.kind == "rollback" and deployment.state == "succeeded":
            good.append(f"{_run_name(deployment)} succeeded.")
    if facts.diagnoses:
        good.append(f"Diagnosed from the channel ({_count(len(facts.diagnoses), 'run')}).")
    return good


def to_improve(facts: PostmortemFacts) -> list[str]:
    incident = facts.incident
    bad = []
    by_deadline = [e for e in facts.events if e.kind == Step.ESCALATED and e.detail != BY_BUTTON]
    if by_deadline:
        bad.append(
            f"Nobody acknowledged in time: escalated {_count(len(by_deadline), 'time')} "
            "by the deadline."
        )
    if any(e.kind == Step.REOPENED for e in facts.events):
        bad.append("Re-opened: an acknowledgement went unanswered past its reminder.")
    lost = [page for page in facts.pages if page.delivered_at is None]
    if lost:
        bad.append(f"{_count(len(lost), 'page')} not delivered.")
    if incident.first_acknowledged_at is None and incident.resolved_at is not None:
        bad.append("Resolved without anyone acknowledging.")
    failed = [d for d in facts.deployments if d.state not in ("succeeded", "running")]
    for deployment in failed:
        bad.append(f"{_run_name(deployment)} ended {_state(deployment)}.")
    if not facts.diagnoses and facts.environment:
        bad.append(f"No `/health {facts.environment} diagnose` on record during the incident.")
    return bad


# --- the timeline's lines -------------------------------------------------------------------


def _event_entry(event: IncidentEvent, facts: PostmortemFacts, names: list[str]) -> Entry | None:
    who = _user(event.user_id) if event.user_id else None
    level = f"level {event.level + 1}" + (
        f" ({names[event.level]})" if event.level < len(names) else ""
    )
    kind = event.kind
    if kind == Step.OPENED:
        text = f"Incident opened, {_opened_by(facts)}"
    elif kind == Step.ESCALATED:
        how = f"by {who}" if event.detail == BY_BUTTON and who else "by the deadline"
        text = f"Escalated to {level} {how}"
    elif kind == Step.REPAGED:
        text = f"{level.capitalize()} paged again (nobody acknowledged)"
    elif kind == Step.ACKNOWLEDGED:
        text = f"Acknowledged by {who or 'someone'}"
    elif kind == Step.REMINDED:
        text = f"Reminder sent to {who or 'the acknowledger'}"
    elif kind == Step.SNOOZED:
        text = f"{who or 'The acknowledger'}: still working"
    elif kind == Step.REOPENED:
        text = f"Re-opened at {level}: the reminder went unanswered"
    elif kind == Step.RESOLVED:
        text = f"Resolved by {who or 'someone'}"
    else:  # a note, a checklist tick, whatever the timeline records besides
        label = "Note" if kind == Step.NOTE else kind.replace("_", " ").capitalize()
        by = f" ({who})" if who else ""
        text = f"{label}{by}: {_cut(_plain(event.detail))}" if event.detail else label + by
    return Entry(event.at, text)


def _alert_entries(fact: AlertFact) -> list[Entry]:
    alert = fact.alert
    title = f"{_metric_title(alert.metric)} on {alert.environment}"
    first = fact.events[0].detail if fact.events and fact.events[0].kind == "fired" else None
    entries = [Entry(alert.opened_at, f"Alert fired: {title}" + (f": {first}" if first else ""))]
    resolved_line = False
    for event in fact.events:
        if event.kind == "fired":
            continue
        resolved_line = resolved_line or event.kind == "resolved"
        entries.append(Entry(event.at, f"Alert {title}: {_cut(_plain(event.detail))}"))
    if alert.resolved_at is not None and not resolved_line:
        entries.append(Entry(alert.resolved_at, f"Alert resolved: {title} back to Normal"))
    return entries


def _deployment_entries(deployment: Deployment) -> list[Entry]:
    what = _run_name(deployment)
    by = f" by {_user(deployment.requested_by)}"
    approved = f", approved by {_user(deployment.approved_by)}" if deployment.approved_by else ""
    entries = [Entry(deployment.started_at, f"{what} started{by}{approved}")]
    if deployment.finished_at is not None:
        summary = f" — {_cut(_plain(deployment.summary))}" if deployment.summary else ""
        entries.append(Entry(deployment.finished_at, f"{what} {_state(deployment)}{summary}"))
    return entries


def _diagnosis_entry(entry: AuditEntry) -> Entry:
    said = f"/health {_plain(entry.text)}"
    answer = _plain(entry.result.splitlines()[0]) if entry.result else entry.outcome
    return Entry(entry.started_at, f"`{said}` by {_user(entry.user_id)}: {_cut(answer)}")


# --- words ----------------------------------------------------------------------------------


def _opened_by(facts: PostmortemFacts) -> str:
    incident = facts.incident
    source = incident.source
    if source == "alert":
        alert = facts.alerts[0].alert if facts.alerts else None
        what = (
            f"the {_metric_title(alert.metric)} alert on {alert.environment}"
            if alert is not None
            else "an alert"
        )
        if incident.opened_by:
            return f"by {_user(incident.opened_by)} from {what} (Escalate)"
        return f"by {what} (Critical: paged automatically)"
    if source == "rollback":
        by = f", requested by {_user(incident.opened_by)}" if incident.opened_by else ""
        return f"by a rollback that failed{by}"
    by = _user(incident.opened_by) if incident.opened_by else "the bot"
    return f"by {by} with {source}" if source.startswith("/") else f"by {by} ({source})"


def _first_acknowledger(events: Iterable[IncidentEvent]) -> str | None:
    return next((e.user_id for e in events if e.kind == Step.ACKNOWLEDGED), None)


def _run_name(deployment: Deployment) -> str:
    kind = "Rollback" if deployment.kind == "rollback" else "Deploy"
    version = f" to {deployment.version}" if deployment.version else ""
    return f"{kind} #{deployment.id} of {deployment.environment}{version}"


def _state(deployment: Deployment) -> str:
    return deployment.state.replace("_", " ")


def _metric_title(metric: str) -> str:
    try:
        return METRICS[Metric(metric)].title
    except ValueError:
        return metric


def _reading(metric: str, value: float | None, problem: str | None) -> str:
    try:
        return reading_text(Metric(metric), value, problem)
    except ValueError:
        return problem or ("no reading" if value is None else f"{value:g}")


def _user(user_id: str | None) -> str:
    return f"@{user_id}" if user_id else "someone"


def _plain(text: str) -> str:
    """One line of user text that cannot break the Markdown around it."""
    return " ".join(text.split()).replace("|", "\\|")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _bullets(items: list[str]) -> list[str]:
    return [f"- {item}" for item in items]


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _clock(at: datetime) -> str:
    return f"{at:%H:%M:%S}"


def _when(at: datetime, opened_at: datetime) -> str:
    """'12:03:00 (+3:00)': the time, and how long after the opening (before it: −)."""
    offset = (at - opened_at).total_seconds()
    sign = "+" if offset >= 0 else "−"
    seconds = int(abs(offset))
    hours, rest = divmod(seconds, 3600)
    clock = (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
    )
    return f"**{_clock(at)}** ({sign}{clock})"


def span(value: timedelta) -> str:
    """45 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
