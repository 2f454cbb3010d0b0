"""Block Kit for incidents: the card (channel and every page), thread lines, the reminder.

The card shows the plan up front — who is paged when, and what happens after the last level —
and where the incident stands: the level being paged and until when, who acknowledged, and
at the end the time to acknowledge and to resolve. Its buttons carry the incident id in their
value and the state they were shown for in the block_id (`incident:INC-3:7`), so a press on an
older copy is recognised as stale.

Only the people of levels already reached are mentioned: a mention pings, and the CTO should
not be woken by the plan of an incident the on-call engineer is about to acknowledge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.runbook.incidents.escalation import (
    BY_BUTTON,
    Action,
    Changed,
    EscalationPlan,
    Level,
    NotAllowed,
    PressRefused,
    PressResult,
    Stale,
    Status,
    Step,
    incident_name,
    plan_of,
    time_to_acknowledge,
    time_to_resolve,
)
from bot.slack.blocks import (
    Block,
    button,
    context,
    cut,
    escape,
    header,
    message,
    section,
    sections_for_lines,
)
from bot.slack.chat import Message
from bot.slack.delivery import Outcome, Pending, Refused, Sent
from bot.store import Incident, IncidentEvent

ACKNOWLEDGE = "incident_ack"
ESCALATE = "incident_escalate"
RESOLVE = "incident_resolve"
SNOOZE = "incident_snooze"
RUNBOOK = "incident_runbook"  # the recovery checklists (checklist_blocks.py)

_BLOCK_ID = re.compile(r"incident:INC-([1-9][0-9]{0,9}):([1-9][0-9]{0,9})")
MAX_STATUS_LINES = 100
FIELD_TEXT_MAX = 2000  # Block Kit: each field of a section

STATUS_EMOJI = {
    Status.TRIGGERED: ":rotating_light:",
    Status.ACKNOWLEDGED: ":eyes:",
    Status.RESOLVED: ":white_check_mark:",
}


def actions_block_id(incident: Incident) -> str:
    return f"incident:{incident_name(incident.id)}:{incident.seq}"


def parse_block_id(block_id: str | None) -> tuple[int, int] | None:
    """'incident:INC-3:7' → (3, 7): the incident and the state its buttons were shown for."""
    match = _BLOCK_ID.fullmatch(block_id or "")
    return (int(match[1]), int(match[2])) if match else None


# --- words ------------------------------------------------------------------------------------


def span(value: timedelta) -> str:
    """10 min, 1 h 30 min, 45 s: how people say a duration."""
    seconds = max(0, round(value.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n
    ]
    return " ".join(parts[:2]) or "0 s"


def at(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"


def mentions(users: Sequence[str]) -> str:
    return ", ".join(f"<@{user}>" for user in users)


def _level_title(plan: EscalationPlan, level: int) -> str:
    return f"level {level + 1} of {len(plan.levels)}, {escape(plan.levels[level].name)}"


def _who_opened(incident: Incident) -> str:
    if incident.opened_by:
        return f"<@{incident.opened_by}>"
    return escape(incident.source)


def status_line(incident: Incident, plan: EscalationPlan) -> str:
    """Where the incident stands, in one line."""
    if incident.status == Status.RESOLVED:
        assert incident.resolved_at is not None
        return f"resolved by <@{incident.resolved_by}> at {at(incident.resolved_at)}"
    if incident.status == Status.ACKNOWLEDGED:
        assert incident.acknowledged_at is not None
        return (
            f"acknowledged by <@{incident.acknowledged_by}> at "
            f"{at(incident.acknowledged_at)} ({_level_title(plan, incident.level)})"
            if plan.levels
            else f"acknowledged by <@{incident.acknowledged_by}>"
        )
    if not plan.levels:
        return "open, nobody paged (no escalation levels in the config)"
    return f"paging {_level_title(plan, incident.level)}"


def _next_step(incident: Incident, plan: EscalationPlan) -> str | None:
    deadline = incident.deadline_at
    if deadline is None:
        return None
    if incident.status == Status.ACKNOWLEDGED:
        if incident.reminded_at is None:
            return f"Reminder to <@{incident.acknowledged_by}> at {at(deadline)} if not resolved"
        return (
            f"Re-opens at level {incident.level + 1} at {at(deadline)} unless "
            f"<@{incident.acknowledged_by}> answers the reminder"
        )
    if incident.level < plan.last:
        following = escape(plan.levels[incident.level + 1].name)
        return f"{following} paged at {at(deadline)} unless someone acknowledges"
    last = escape(plan.levels[plan.last].name)
    return f"{last} paged again at {at(deadline)} unless someone acknowledges"


def plan_lines(incident: Incident, plan: EscalationPlan) -> list[str]:
    """The escalation path, up front: who is paged when, and after the last level."""
    if not plan.levels:
        return [
            "*Escalation path*",
            "No escalation levels in the config (`escalation.levels`): nobody is paged. "
            "People in `access.approvers` can acknowledge and resolve it.",
        ]
    lines = ["*Escalation path* (if nobody acknowledges)"]
    current = incident.level if incident.status != Status.RESOLVED else -1
    for index, (level, offset) in enumerate(zip(plan.levels, plan.offsets(), strict=True)):
        when = "+0" if not offset else f"+{span(offset)}"
        reached = index <= incident.top_level
        people = level_people(level) if reached else _headcount(level)
        marker = "▶" if index == current else ("✓" if reached else "·")
        name = f"*{escape(level.name)}*" if index == current else escape(level.name)
        lines.append(f"{marker} {when} {name} — {people}")
    last = escape(plan.levels[-1].name)
    lines.append(f"Then {last} again every {span(plan.repeat_every)} until someone acknowledges.")
    return lines


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def level_people(level: Level, paged: Sequence[str] = ()) -> str:
    """Who a level pages: the people its page went to when known, else its fixed users and,
    for a rotation, whoever holds its turn when the page is sent."""
    if paged:
        return mentions(paged)
    named = [mentions(level.users)] if level.users else []
    if level.rotation is not None:
        named.append("whoever is on call in its rotation")
    return " and ".join(named) or "nobody"


def _headcount(level: Level) -> str:
    count = len(level.users) + (1 if level.rotation is not None else 0)
    return f"{count} {'person' if count == 1 else 'people'}"


# --- the card ---------------------------------------------------------------------------------


def _fallback(incident: Incident, plan: EscalationPlan) -> str:
    name = incident_name(incident.id)
    # The fallback is what notifications show; mentions in it would ping like the message's.
    return (
        f"{name} (SEV {incident.severity}) {escape(incident.summary)} — "
        f"{status_line(incident, plan)}"
    )


def incident_card(incident: Incident) -> Message:
    """The incident as it stands: the channel message, and every page sent for it."""
    plan = plan_of(incident)
    status = Status(incident.status)
    name = incident_name(incident.id)
    where = f" · {incident.environment}" if incident.environment else ""
    blocks: list[Block] = [
        header(f"{name} · SEV {incident.severity}{where} · {status.value.capitalize()}"),
    ]
    title = f"{STATUS_EMOJI[status]} *{escape(incident.summary)}*"
    if incident.link:
        title += f"\n<{incident.link}|Details>"
    blocks.append(section(title))
    facts = [
        f"*Status*\n{_first_upper(status_line(incident, plan))}",
        f"*Severity*\nSEV {incident.severity}",
        f"*Environment*\n{escape(incident.environment) if incident.environment else 'not given'}",
        f"*Opened*\n{at(incident.opened_at)} by {_who_opened(incident)}",
    ]
    following = _next_step(incident, plan)
    if following:
        facts.append(f"*Next*\n{following}")
    if status is Status.RESOLVED:
        to_ack = time_to_acknowledge(incident)
        to_resolve = time_to_resolve(incident)
        facts.append(f"*Time to acknowledge*\n{span(to_ack) if to_ack else 'never acknowledged'}")
        facts.append(f"*Time to resolve*\n{span(to_resolve) if to_resolve else '–'}")
    fields = [{"type": "mrkdwn", "text": cut(fact, FIELD_TEXT_MAX)} for fact in facts]
    blocks.append({"type": "section", "fields": fields})
    blocks.append(section("\n".join(plan_lines(incident, plan))))
    buttons = _card_buttons(incident, status)
    if buttons:
        blocks.append(
            {"type": "actions", "block_id": actions_block_id(incident), "elements": buttons}
        )
    blocks.append(
        context(f"{name} · opened via {escape(incident.source)} · the timeline is in the thread")
    )
    return message(_fallback(incident, plan), blocks)


def _card_buttons(incident: Incident, status: Status) -> list[Block]:
    value = incident_name(incident.id)
    if status is Status.RESOLVED:
        return []
    buttons = []
    if status is Status.TRIGGERED:
        buttons.append(button("Acknowledge", ACKNOWLEDGE, value, style="primary"))
    buttons.append(button("Escalate", ESCALATE, value))
    buttons.append(button("Resolve", RESOLVE, value))
    buttons.append(button("Runbook", RUNBOOK, value))
    return buttons


def page(incident: Incident, level_paged: int | None = None) -> Message:
    """A page: the card, with a notification text that says why it arrived — the level the
    person was paged as (by default the incident's current one)."""
    plan = plan_of(incident)
    card = incident_card(incident)
    index = incident.level if level_paged is None else level_paged
    level = plan.levels[index].name if 0 <= index < len(plan.levels) else ""
    text = (
        f"Paging you for {incident_name(incident.id)} (SEV {incident.severity}, "
        f"{escape(level)}): {escape(incident.summary)}"
    )
    return message(text, card.blocks)


def reminder(incident: Incident, asked_at_seq: int) -> Message:
    """The acknowledger's reminder; its buttons live only while the question is open."""
    plan = plan_of(incident)
    name = incident_name(incident.id)
    summary = escape(incident.summary)
    if incident.seq == asked_at_seq and incident.deadline_at is not None:
        assert incident.acknowledged_at is not None and incident.reminded_at is not None
        text = (
            f":alarm_clock: *{name}* ({summary}) is still open: you acknowledged it "
            f"{span(incident.reminded_at - incident.acknowledged_at)} ago. Is it resolved?\n"
            f"Without an answer by {at(incident.deadline_at)} it re-opens at level "
            f"{incident.level + 1} and pages again. *Still working* asks again in "
            f"{span(plan.ack_reminder)}."
        )
        value = name
        buttons = [
            button("Resolve", RESOLVE, value, style="primary"),
            button("Still working", SNOOZE, value),
        ]
        blocks = [
            section(text),
            {"type": "actions", "block_id": actions_block_id(incident), "elements": buttons},
        ]
        return message(f"{name} is still open — is it resolved?", blocks)
    text = f":alarm_clock: *{name}* ({summary}): {status_line(incident, plan)}."
    return message(f"{name}: {status_line(incident, plan)}", [section(text)])


# --- the thread -------------------------------------------------------------------------------


def timeline_line(
    event: IncidentEvent, incident: Incident, paged: Sequence[str] = ()
) -> Message | None:
    """The thread's line for one step (None for the opening: the card is that); `paged` is
    who its pages went to, when it paged."""
    plan = plan_of(incident)
    who = f"<@{event.user_id}>" if event.user_id else "someone"
    step = Step(event.kind)
    level = plan.levels[event.level] if 0 <= event.level < len(plan.levels) else None
    paged_text = f"{escape(level.name)}: {level_people(level, paged)}" if level else "nobody"
    if step in (Step.OPENED, Step.CHECKLIST, Step.CHECKED, Step.UNCHECKED):
        return None  # the card is the opening; a checklist is its own message, ticked in place
    if step is Step.ESCALATED:
        if event.detail == BY_BUTTON:
            text = (
                f":arrow_double_up: {who} escalated — paging level {event.level + 1}, {paged_text}"
            )
        else:
            waited = plan.levels[event.level - 1].timeout if event.level > 0 else None
            within = f" within {span(waited)}" if waited else ""
            text = (
                f":arrow_double_up: No acknowledgement{within} — "
                f"paging level {event.level + 1}, {paged_text}"
            )
    elif step is Step.REPAGED:
        if event.detail == BY_BUTTON:
            text = f":repeat: {who} asked to page the last level again — {paged_text}"
        else:
            text = f":repeat: Still not acknowledged — paging again: {paged_text}"
    elif step is Step.ACKNOWLEDGED:
        after = span(event.at - incident.opened_at)
        where = f" at level {event.level + 1}" if level else ""
        text = f":eyes: Acknowledged by {who}{where}, {after} after it opened"
    elif step is Step.REMINDED:
        text = (
            f":alarm_clock: Acknowledged {span(plan.ack_reminder)} ago and not resolved — "
            f"asked {who} whether it is resolved"
        )
    elif step is Step.SNOOZED:
        text = f":zzz: {who} is still working on it — next reminder in {span(plan.ack_reminder)}"
    elif step is Step.REOPENED:
        text = (
            f":leftwards_arrow_with_hook: No answer from {who} within "
            f"{span(plan.reopen_after)} — re-opened at level {event.level + 1}, {paged_text}"
        )
    elif step is Step.RESOLVED:
        to_ack = time_to_acknowledge(incident)
        to_resolve = event.at - incident.opened_at
        text = (
            f":white_check_mark: Resolved by {who} — time to acknowledge "
            f"{span(to_ack) if to_ack else 'never acknowledged'} · time to resolve "
            f"{span(to_resolve)}"
        )
    else:
        by = f" ({who})" if event.user_id else ""
        text = f":memo: {escape(event.detail)}{by}"
    return message(text, [section(text)])


# --- answers to the person who asked ----------------------------------------------------------


def opened(incident: Incident, created: bool, channel: str | None) -> Message:
    plan = plan_of(incident)
    name = incident_name(incident.id)
    where = f" in <#{channel}>" if channel else ""
    if not created:
        text = f"{name} is already open for this{where}: {status_line(incident, plan)}."
    elif plan.levels:
        first = plan.levels[0]
        text = (
            f":rotating_light: Opened *{name}*{where}: paging level 1, "
            f"{escape(first.name)} ({level_people(first)}). Its buttons are on the "
            "message and in the pages."
        )
    else:
        text = (
            f":warning: Opened *{name}*{where}, but nobody is paged: the config has no "
            "escalation levels (`escalation.levels`)."
        )
    return message(text, [section(text)])


def press_answer(
    result: PressResult | None, incident_text: str, action: Action | None = None
) -> Message | None:
    """What the presser alone is told; None when the press changed the incident."""
    if result is None:
        return no_such_incident(incident_text)
    if isinstance(result, Changed):
        return None
    incident = result.incident
    name = incident_name(incident.id)
    now = status_line(incident, plan_of(incident))
    if isinstance(result, NotAllowed):
        text = (
            f":no_entry: Only the people paged for {name}, or approvers "
            "(`access.approvers`), may press its buttons."
        )
    elif (
        action is Action.ACKNOWLEDGE
        and incident.status == Status.ACKNOWLEDGED
        and incident.acknowledged_at is not None
    ):
        who = f"<@{incident.acknowledged_by}>"
        text = (
            f":information_source: {name} is acknowledged already: {who} acknowledged it "
            f"at {at(incident.acknowledged_at)}."
        )
    elif isinstance(result, PressRefused):
        text = f":information_source: Nothing changed: {name} — {result.reason}. Now {now}."
    else:
        assert isinstance(result, Stale)
        text = (
            f":information_source: Nothing changed: that button was on an older state of "
            f"{name}. Now {now}; the message shows it."
        )
    return message(text, [section(text)])


def no_such_incident(name: str) -> Message:
    text = f"There is no incident {escape(name[:40])}."
    return message(text, [section(text)])


def postmortem_answer(name: str, file: str, where: str, outcome: Outcome) -> Message:
    """What `/escalate postmortem INC-<n>` tells the asker."""
    if isinstance(outcome, Sent):
        text = f":memo: The post-mortem draft of {name} is in {where}: `{escape(file)}`."
    elif isinstance(outcome, Pending):
        text = (
            f":hourglass: The post-mortem draft of {name} waits to be shared in {where} "
            f"({escape(outcome.reason)}); it goes as soon as Slack takes it."
        )
    elif isinstance(outcome, Refused):
        text = (
            f":warning: Slack would not take the post-mortem draft of {name} "
            f"({escape(outcome.error.error)}): the bot needs files:write and to be in the "
            "channel."
        )
    else:
        text = f":information_source: The post-mortem draft of {name} was not shared."
    return message(text, [section(text)])


def open_incidents(incidents: Sequence[Incident], now: datetime) -> Message:
    """`/escalate status`: the unresolved incidents, oldest first."""
    if not incidents:
        text = "No open incidents."
        return message(text, [section(text)])
    lines = []
    for incident in incidents[:MAX_STATUS_LINES]:
        plan = plan_of(incident)
        where = f" · {escape(incident.environment)}" if incident.environment else ""
        lines.append(
            f"{STATUS_EMOJI[Status(incident.status)]} *{incident_name(incident.id)}* · "
            f"SEV {incident.severity}{where} · {escape(incident.summary)} — "
            f"{status_line(incident, plan)} · open {span(now - incident.opened_at)}"
        )
    if len(incidents) > MAX_STATUS_LINES:
        lines.append(f"… and {len(incidents) - MAX_STATUS_LINES} more")
    count = len(incidents)
    title = f"{count} open incident{'s' if count != 1 else ''}"
    blocks: list[Block] = [header(title), *sections_for_lines(lines)]
    return message(f"{title}: " + "; ".join(incident_name(i.id) for i in incidents), blocks)
