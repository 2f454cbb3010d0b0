"""The runbook's recovery checklists in an incident (bot/runbook/incidents/checklists.py):
offer them, post the chosen one in the incident's thread, record each tick.

Posting and ticking are timeline events (Escalations.record: one INSERT each), and the
incident's sync (incidents.py) posts the checklist in the thread and brings it up to date in
place after every tick — so two people ticking at once both count, whichever replica took
their press.
"""

from __future__ import annotations

import asyncio

from bot.runbook.incidents.checklists import BY_KEY, CHECKED, checklists, tick_detail
from bot.runbook.incidents.escalation import Status, Step, incident_name, parse_incident_name
from bot.slack.blocks import escape, notice
from bot.slack.incidents import checklist_blocks
from bot.slack.incidents.incidents import Incidents, PressReply


async def offer(incidents: Incidents, value: str) -> PressReply:
    """The Runbook button: which procedures there are, privately."""
    incident_id = parse_incident_name(value)
    incident = await incidents.get(incident_id) if incident_id is not None else None
    if incident is None:
        return PressReply(notice(f"There is no incident {escape(value[:40])}."), "no such incident")
    return PressReply(
        checklist_blocks.choices(incident), f"{incident_name(incident.id)}: runbook offered"
    )


async def post(incidents: Incidents, value: str, user_id: str) -> PressReply:
    """A procedure chosen: its checklist goes in the incident's thread."""
    parsed = checklist_blocks.parse_post_value(value)
    if parsed is None or parsed[1] not in BY_KEY:
        return PressReply(
            notice("That is not one of the runbook's procedures."), "no such procedure"
        )
    incident_id, key = parsed
    incident = await incidents.get(incident_id)
    name = incident_name(incident_id)
    if incident is None:
        return PressReply(notice(f"There is no incident {name}."), "no such incident")
    if incident.status == Status.RESOLVED:
        return PressReply(
            notice(f"{name} is resolved: no checklist is posted."), f"{name} resolved"
        )
    if incident.channel is None:
        text = f"{name} has no message to thread the checklist under (no incidents channel)."
        return PressReply(notice(text), f"{name}: no thread")
    procedure = BY_KEY[key]
    await incidents.escalations.record(incident_id, Step.CHECKLIST, key, user_id=user_id)
    text = f"The {procedure.title} checklist is going into {name}'s thread."
    return PressReply(notice(text, ":clipboard:"), f"{name}: {procedure.title} checklist posted")


async def tick(incidents: Incidents, block_id: str | None, value: str, user_id: str) -> PressReply:
    """A checkbox pressed: the step is ticked when its option is selected now, else unticked.

    Slack sends the element's selected options after the press; the step is named by the
    block. Recorded as one event with who and when."""
    parsed = checklist_blocks.parse_step_block_id(block_id)
    if parsed is None:
        return PressReply(notice("That is not a checklist step."), "no such step")
    incident_id, checklist_id, step = parsed
    name = incident_name(incident_id)
    events = await asyncio.to_thread(incidents.store.incident_events, incident_id)
    state = checklists(events).get(checklist_id)
    if state is None or not 0 <= step < len(state.procedure.steps):
        return PressReply(notice(f"{name} has no such checklist step."), "no such step")
    ticked = value == f"{name}:{checklist_id}:{step}"
    kind = Step.CHECKED if ticked else Step.UNCHECKED
    await incidents.escalations.record(
        incident_id, kind, tick_detail(checklist_id, step), user_id=user_id
    )
    what = "ticked" if kind.value == CHECKED else "unticked"
    text = state.procedure.steps[step].text
    return PressReply(None, f"{name}: {state.procedure.title} step {step + 1} ({text}) {what}")
