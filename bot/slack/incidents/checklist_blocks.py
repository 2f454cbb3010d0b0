"""Block Kit for the runbook's recovery checklists in an incident's thread.

The incident card's **Runbook** button (`incident_runbook`) answers privately with the
procedures (`incident_runbook_post`, value `INC-3:<procedure>`); the chosen one is posted in
the incident's thread as a checklist: one actions block per step (block_id
`checklist:INC-3:<checklist>:<step>`) holding its checkbox (`incident_checklist_tick`; the
option's value `INC-3:<checklist>:<step>`, selected when ticked, with who and when) and, for a
step the bot can do, a button that runs it in the incident's environment
(`incident_checklist_<backups|restore|rollback|health|diagnose|logs>`, value the environment).
"""

from __future__ import annotations

import re

from bot.runbook.incidents.checklists import PROCEDURES, ChecklistState, Does, Tick
from bot.runbook.incidents.escalation import incident_name
from bot.slack.blocks import Block, button, context, cut, escape, message, section
from bot.slack.chat import Message
from bot.slack.incidents.incident_blocks import RUNBOOK
from bot.store import Incident

POST = "incident_runbook_post"
TICK = "incident_checklist_tick"
__all__ = ["POST", "RUNBOOK", "STEP_ACTIONS", "TICK"]
STEP_ACTIONS: dict[Does, str] = {does: f"incident_checklist_{does.value}" for does in Does}
OPTION_TEXT_MAX = 75  # Block Kit: a checkbox option's text and description

_BLOCK_ID = re.compile(r"checklist:INC-([1-9][0-9]{0,9}):([0-9]{1,12}):([0-9]{1,3})")
_POST_VALUE = re.compile(r"INC-([1-9][0-9]{0,9}):([a-z_]{1,40})")


def step_block_id(incident_id: int, checklist_id: int, step: int) -> str:
    return f"checklist:{incident_name(incident_id)}:{checklist_id}:{step}"


def parse_step_block_id(block_id: str | None) -> tuple[int, int, int] | None:
    """'checklist:INC-3:41:2' → (3, 41, 2): the incident, the checklist, the step."""
    match = _BLOCK_ID.fullmatch(block_id or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def parse_post_value(value: str) -> tuple[int, str] | None:
    """'INC-3:complete_failure' → (3, 'complete_failure')."""
    match = _POST_VALUE.fullmatch(value)
    return (int(match[1]), match[2]) if match else None


def step_command(does: Does, env: str) -> str:
    """The command a step's button runs, as a person would type it."""
    return {
        Does.BACKUPS: f"/rollback list {env}",
        Does.RESTORE: f"/rollback {env} <the newest backup>",
        Does.ROLL_BACK: f"/rollback {env}",
        Does.HEALTH: f"/health {env}",
        Does.DIAGNOSE: f"/health {env} diagnose",
        Does.LOGS: f"/health {env} logs errors",
    }[does]


def choices(incident: Incident) -> Message:
    """The Runbook button's private answer: which procedure to post."""
    name = incident_name(incident.id)
    where = (
        f" Its steps' buttons act on *{escape(incident.environment)}*."
        if incident.environment
        else " The incident names no environment, so its steps come without buttons."
    )
    text = (
        f"Which of the runbook's procedures for {name}? It is posted in the incident's thread "
        f"as a checklist; each tick is kept on the timeline with who and when.{where}"
    )
    # One block per procedure: an action_id appears once per block.
    blocks: list[Block] = [section(text)]
    blocks += [
        {
            "type": "actions",
            "block_id": f"runbook:{name}:{p.key}",
            "elements": [button(p.title, POST, f"{name}:{p.key}")],
        }
        for p in PROCEDURES
    ]
    return message(f"Which runbook procedure for {name}?", blocks)


def _option(incident: Incident, state: ChecklistState, step: int) -> dict[str, object]:
    tick = state.ticks[step]
    text = f"{step + 1}. {state.procedure.steps[step].text}"
    option: dict[str, object] = {
        "text": {"type": "mrkdwn", "text": cut(text, OPTION_TEXT_MAX)},
        "value": f"{incident_name(incident.id)}:{state.event_id}:{step}",
    }
    if tick is not None:
        option["description"] = {"type": "mrkdwn", "text": _ticked(tick)}
    return option


def _ticked(tick: Tick) -> str:
    by = f" by <@{tick.by}>" if tick.by else ""
    return f"done{by} at {tick.at:%H:%M:%S} UTC"


def checklist(incident: Incident, state: ChecklistState) -> Message:
    """The checklist as it stands: every step, ticked or not, and the bot's buttons."""
    name = incident_name(incident.id)
    procedure = state.procedure
    env = incident.environment
    intro = (
        f":clipboard: *{escape(procedure.title)}* — the runbook's {escape(procedure.section)}, "
        f"for {name}{f' ({escape(env)})' if env else ''}. Tick each step as it is done."
    )
    blocks: list[Block] = [section(intro)]
    for index, step in enumerate(procedure.steps):
        option = _option(incident, state, index)
        box: Block = {"type": "checkboxes", "action_id": TICK, "options": [option]}
        if state.ticks[index] is not None:
            box["initial_options"] = [option]
        elements: list[Block] = [box]
        if step.does is not None and env:
            elements.append(
                button(f"Run {step_command(step.does, env)}", STEP_ACTIONS[step.does], env)
            )
        blocks.append(
            {
                "type": "actions",
                "block_id": step_block_id(incident.id, state.event_id, index),
                "elements": elements,
            }
        )
    total = len(procedure.steps)
    note = f"{state.done} of {total} steps done · ticks are kept on {name}'s timeline"
    if not env:
        note += " · no environment on the incident (`/escalate … --env <env>`): no step buttons"
    blocks.append(context(note))
    fallback = f"{procedure.title} checklist for {name}: {state.done} of {total} steps done"
    return message(fallback, blocks)
