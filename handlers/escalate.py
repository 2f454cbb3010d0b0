"""/escalate: open an incident and walk the runbook's escalation path; its buttons and timers."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, replace
from typing import Literal

from bot.runbook.incidents.escalation import (
    DEADLINE_TIMER,
    DEFAULT_SEVERITY,
    MAX_SUMMARY,
    SEVERITIES,
    SYNC_TIMER,
    Action,
    incident_name,
    parse_incident_name,
)
from bot.slack.access import Allow, Usage
from bot.slack.blocks import duration_text, echo, notice
from bot.slack.dispatch import ActionRequest, Context, action, command, timer
from bot.slack.incidents import incident_blocks
from bot.slack.limits import ESCALATE_SOURCE
from bot.slack.services import Services
from bot.store import StoreError, Timer
from handlers.deploy import environment

# A summary at its limit plus --sev and --env <name>; anything longer is refused.
MAX_TEXT = MAX_SUMMARY + 120
_SEV = re.compile(r"--sev(?:=|\s+)(\S+)")
_ENV = re.compile(r"--env(?:=|\s+)(?!--)(\S+)")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}


@dataclass(frozen=True)
class Opening:
    summary: str
    severity: int
    environment: str | None = None  # as typed; the handler checks it against the config


@dataclass(frozen=True)
class ByName:
    """`/escalate ack|resolve INC-<n>`: a button of the incident, pressed without its message."""

    action: Action
    incident_id: int


@dataclass(frozen=True)
class PostmortemOf:
    """`/escalate postmortem INC-<n>`: the incident's post-mortem draft, shared again."""

    incident_id: int


POSTMORTEM = "postmortem"
BY_NAME = {"ack": Action.ACKNOWLEDGE, "resolve": Action.RESOLVE}
DONE = {Action.ACKNOWLEDGE: "acknowledged", Action.RESOLVE: "resolved"}


def parse(text: str) -> Opening | ByName | PostmortemOf | Literal["help", "status"] | str:
    """What /escalate's text asks for; a plain str is what is wrong with it."""
    if len(text) > MAX_TEXT:
        return (
            f"That is {len(text):,} characters; keep the summary under {MAX_SUMMARY} "
            "(the details go in the incident's thread)."
        )
    words = text.split()
    if words == ["help"]:
        return "help"
    if words == ["status"]:
        return "status"
    verb = words[0].lower() if words else ""
    if len(words) <= 2 and (verb in BY_NAME or verb == POSTMORTEM):
        incident_id = parse_incident_name(words[1].upper()) if len(words) == 2 else None
        if incident_id is None:
            return (
                f"Name the incident: `/escalate {verb} INC-<n>` "
                "(`/escalate status` lists the open ones)."
            )
        if verb == POSTMORTEM:
            return PostmortemOf(incident_id)
        return ByName(BY_NAME[verb], incident_id)
    severities = _SEV.findall(text)
    if len(severities) > 1:
        return "Give --sev once."
    severity = DEFAULT_SEVERITY
    if severities:
        if severities[0] not in {str(s) for s in SEVERITIES}:
            return f"--sev takes 1, 2 or 3, not {echo(severities[0])}."
        severity = int(severities[0])
    environments = _ENV.findall(text)
    if len(environments) > 1:
        return "Give --env once."
    rest = _ENV.sub(" ", _SEV.sub(" ", text)).split()
    options = [word for word in rest if word.startswith("--")]
    if "--sev" in options:
        return "--sev needs a value: 1, 2 or 3."
    if "--env" in options:
        return "--env needs an environment, e.g. `--env production`."
    if options:
        return (
            f"Unknown option {echo(options[0])}: /escalate takes only --sev 1|2|3 and --env <env>."
        )
    summary = _unquote(" ".join(rest))
    if not summary:
        return "An incident needs a summary, e.g. `/escalate api 5xx spike --sev 1`."
    if len(summary) > MAX_SUMMARY:
        return f"Keep the summary under {MAX_SUMMARY} characters (it is {len(summary):,})."
    return Opening(summary, severity, environments[0] if environments else None)


def _unquote(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


def dedupe_key(summary: str, environment: str | None = None) -> str:
    """The same summary (case and spacing aside) is the same incident while it is open — in
    the same environment, when one is named."""
    said = " ".join(summary.casefold().split())
    if environment is not None:
        said += f"\0{environment}"
    return "escalate:" + hashlib.sha256(said.encode()).hexdigest()[:40]


PAGED = (
    "judged on the incident: people paged for it so far (or on call for a level it reached), "
    "and approvers"
)


@command(
    "/escalate",
    Usage(
        "/escalate <summary> [--sev 1|2|3] [--env <env>]",
        "open an incident and page the escalation path until someone acknowledges "
        "(severity 2 unless given); --env names where it happens, for its runbook checklists",
        then="limits.escalations per user; the same summary joins the incident still open",
    ),
    Usage("/escalate status", "the open incidents: level, age, who acknowledged"),
    Usage(
        "/escalate ack|resolve INC-<n>",
        "acknowledge or resolve an incident by name, as its buttons do (for whoever lost its "
        "message)",
        then=PAGED,
    ),
    Usage(
        "/escalate postmortem INC-<n>",
        "the incident's post-mortem draft (timeline, time to acknowledge and resolve) as a "
        "Markdown file in its thread; shared by itself when the incident is resolved",
    ),
    Usage("/escalate help", "show this help"),
)
async def escalate(ctx: Context) -> None:
    """Open an incident and page the runbook's escalation path until someone acknowledges."""
    wanted = parse(ctx.request.text)
    if wanted == "help":
        return await ctx.answer_help()
    if wanted == "status":
        await ctx.ack()
        ctx.hand_off(lambda: _status(ctx))
        return
    if isinstance(wanted, str):
        return await ctx.answer_usage(wanted)
    if isinstance(wanted, ByName):
        await ctx.ack()
        ctx.hand_off(lambda: _by_name(ctx, wanted))
        return
    if isinstance(wanted, PostmortemOf):
        await ctx.ack()
        ctx.hand_off(lambda: _postmortem(ctx, wanted))
        return
    if wanted.environment is not None:
        env = environment(wanted.environment, ctx.config)
        if isinstance(env, str):
            return await ctx.answer_usage(env)
        wanted = replace(wanted, environment=env.name)
    if not await _may_open(ctx, wanted):
        return
    await ctx.ack()
    ctx.hand_off(lambda: _open(ctx, wanted))


async def _may_open(ctx: Context, wanted: Opening) -> bool:
    """Within the user's limits.escalations — unless the summary joins an open incident,
    which pages nobody."""
    store = ctx.services.store
    try:
        joins = await asyncio.to_thread(
            store.open_incident_with_key, dedupe_key(wanted.summary, wanted.environment)
        )
    except StoreError:
        joins = None  # open_incident will say what is wrong with the store
    if joins is not None:
        return True
    wait = await ctx.services.limits.escalation_wait(ctx.user_id)
    if wait is None:
        return True
    rate = ctx.config.limits.escalations
    await ctx.limited(
        f"You opened {rate.count} incidents in the last {duration_text(rate.per)} "
        "(limits.escalations); add to an open one instead (`/escalate status` lists them)",
        wait,
    )
    return False


async def _open(ctx: Context, wanted: Opening) -> str:
    incident, created = await ctx.services.incidents.open_incident(
        wanted.summary,
        wanted.severity,
        ESCALATE_SOURCE,
        opened_by=ctx.user_id,
        channel=ctx.request.channel_id,
        dedupe_key=dedupe_key(wanted.summary, wanted.environment),
        environment=wanted.environment,
    )
    name = incident_name(incident.id)
    if not created:
        await ctx.services.incidents.note(
            incident.id, "Reported again with /escalate", user_id=ctx.user_id
        )
        await ctx.reply_privately(incident_blocks.opened(incident, created, incident.channel))
        return f"{name} already open for that summary: noted on it"
    await ctx.reply_privately(incident_blocks.opened(incident, created, incident.channel))
    return f"{name} opened (SEV {incident.severity})"


async def _by_name(ctx: Context, wanted: ByName) -> str:
    """The same judgement as a press of the button (who may, what the state allows)."""
    name = incident_name(wanted.incident_id)
    reply = await ctx.services.incidents.press(wanted.action, name, None, ctx.user_id)
    if reply.denied:
        ctx.outcome = "denied"
    done = notice(f"{name} {DONE[wanted.action]}: its messages show it.", ":white_check_mark:")
    await ctx.reply_privately(reply.answer or done)
    return reply.result


async def _postmortem(ctx: Context, wanted: PostmortemOf) -> str:
    answer, result = await ctx.services.incidents.postmortem(
        wanted.incident_id, ctx.request.channel_id
    )
    await ctx.reply_privately(answer)
    return result


async def _status(ctx: Context) -> str:
    answer = await ctx.services.incidents.status()
    await ctx.reply_privately(answer)
    return answer.text


# Judged on the incident (bot/runbook/incidents/escalation.py may_press), as before: who was
# paged for it is a fact of the incident, not of the config as it is now.
INCIDENT_BUTTONS = Allow("everyone", then=PAGED)


async def _press(ctx: Context, pressed: Action) -> None:
    """Ack at once; the press is judged and applied on the workers."""
    await ctx.ack()
    request = ctx.request
    assert isinstance(request, ActionRequest)

    async def work() -> str:
        reply = await ctx.services.incidents.press(
            pressed, request.value, request.block_id, ctx.user_id
        )
        if reply.denied:
            ctx.outcome = "denied"
        if reply.answer is not None:
            await ctx.reply_privately(reply.answer)
        return reply.result

    ctx.hand_off(work)


@action(incident_blocks.ACKNOWLEDGE, "Acknowledge", allow=INCIDENT_BUTTONS)
async def acknowledge(ctx: Context) -> None:
    """Acknowledge: stops the escalation; the acknowledger is reminded if it stays open."""
    await _press(ctx, Action.ACKNOWLEDGE)


@action(incident_blocks.ESCALATE, "Escalate", allow=INCIDENT_BUTTONS)
async def escalate_now(ctx: Context) -> None:
    """Escalate: page the next level now (the last level again, past the end)."""
    await _press(ctx, Action.ESCALATE)


@action(incident_blocks.RESOLVE, "Resolve", allow=INCIDENT_BUTTONS)
async def resolve(ctx: Context) -> None:
    """Resolve: close the incident; every copy of its message shows the outcome."""
    await _press(ctx, Action.RESOLVE)


@action(incident_blocks.SNOOZE, "Still working", allow=INCIDENT_BUTTONS)
async def still_working(ctx: Context) -> None:
    """Still working: the reminder's answer; asks again after escalation.ack_reminder."""
    await _press(ctx, Action.SNOOZE)


@timer(DEADLINE_TIMER)
async def deadline(services: Services, due: Timer) -> None:
    """An incident's deadline passed: page the next level, remind, or re-open."""
    await services.incidents.on_deadline_timer(due)


@timer(SYNC_TIMER)
async def sync(services: Services, due: Timer) -> None:
    """Post what an incident's step needs: card, thread line, pages, updates."""
    await services.incidents.on_sync_timer(due)
