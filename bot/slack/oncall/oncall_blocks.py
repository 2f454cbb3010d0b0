"""Block Kit for on-call: /oncall's answers, override notes, hand-off messages.

Times are shown in each level's zone (its rotation's handoff_zone, or its hand-off's offset,
else UTC), with the zone's abbreviation, since that is the clock the rotation keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from bot.runbook.incidents.escalation import Level, incident_name, plan_of
from bot.runbook.oncall.handoffs import Handoff, OpenWork
from bot.runbook.oncall.oncall import SCHEDULE_SPAN, Shift, zone_of
from bot.slack.alerts.alert_blocks import title as alert_title
from bot.slack.blocks import Block, context, escape, header, message, section, sections_for_lines
from bot.slack.changes.lock_blocks import lock_holder
from bot.slack.chat import Message
from bot.slack.incidents.incident_blocks import mentions, status_line
from bot.store.oncall import Override

MAX_LINES = 20  # of each kind of open work in a hand-off message


@dataclass(frozen=True)
class Standing:
    """One level as /oncall shows it: who is on call now, until when, and what comes next."""

    number: int
    level: Level
    people: tuple[str, ...]
    shift: Shift | None  # the turn under way (None: fixed users only)
    next_handoffs: list[tuple[datetime, str]]  # when, and who takes the turn then


def when(moment: datetime, zone: tzinfo) -> str:
    """'Mon 07 Dec 09:00 CET' on the level's clock."""
    local = moment.astimezone(zone)
    return f"{local:%a %d %b %H:%M} {local.tzname()}"


def level_title(number: int, level: Level) -> str:
    return f"level {number}, {escape(level.name)}"


def standing_lines(standing: Standing) -> list[str]:
    level, zone = standing.level, zone_of(standing.level)
    title = f"*{standing.number} · {escape(level.name)}*"
    if standing.shift is None:
        return [f"{title} — {mentions(standing.people)} (fixed users, no rotation)"]
    shift = standing.shift
    until = (
        f"until {when(shift.ends_at, zone)}"
        if shift.ends_at
        else f"for the next {SCHEDULE_SPAN.days // 7} weeks at least"
    )
    covering = " (override)" if shift.override else ""
    lines = [f"{title} — <@{shift.user_id}>{covering} {until}"]
    if standing.next_handoffs:
        following = " · ".join(
            f"{when(at, zone)} → <@{user}>" for at, user in standing.next_handoffs
        )
        lines.append(f"Next hand-offs: {following}")
    if level.users:
        lines.append(f"Also paged at this level: {mentions(level.users)}")
    return lines


def override_line(override: Override, levels: Sequence[Level], *, ended: bool = False) -> str:
    """'• @olga on call for level 1, On-call DevOps Engineer until … (set by @bob)'."""
    number, level = next(
        ((n, lv) for n, lv in enumerate(levels, 1) if lv.name == override.level), (0, None)
    )
    where = level_title(number, level) if level else escape(override.level)
    until = "" if ended else f" until {when(override.ends_at, zone_of(level) if level else UTC)}"
    return f"• <@{override.user_id}> on call for {where}{until} (set by <@{override.created_by}>)"


def overview(
    standings: Sequence[Standing], overrides: Sequence[Override], levels: Sequence[Level]
) -> Message:
    """`/oncall`: every level's person now, until when, the next two hand-offs, overrides."""
    if not standings:
        text = "No escalation levels in the config (`escalation.levels`): nobody is on call."
        return message(text, [section(text)])
    lines = [line for standing in standings for line in standing_lines(standing)]
    blocks: list[Block] = [header("On call now"), *sections_for_lines(lines)]
    if overrides:
        blocks.extend(
            sections_for_lines(
                ["*Overrides in effect*", *(override_line(o, levels) for o in overrides)]
            )
        )
    else:
        blocks.append(section("No overrides in effect."))
    blocks.append(
        context(
            "`/oncall <level>`: the next 4 weeks of a level · "
            "`/oncall override @someone [for 8h | until 2026-12-08 09:00] [level <n>]`: "
            "a temporary swap · `/oncall override cancel`"
        )
    )
    fallback = "On call now: " + "; ".join(
        f"{s.number} {s.level.name}: " + ", ".join(f"<@{p}>" for p in s.people) for s in standings
    )
    return message(fallback, blocks)


def schedule(number: int, level: Level, shifts: Sequence[Shift], people: Sequence[str]) -> Message:
    """`/oncall <level>`: who holds the level's turn over the next 4 weeks."""
    title = f"Level {number}, {level.name}: the next {SCHEDULE_SPAN.days // 7} weeks"
    if level.rotation is None:
        text = (
            f"Level {number}, {escape(level.name)}, has no rotation: "
            f"it pages {mentions(people)} every time."
        )
        return message(text, [section(text)])
    zone = zone_of(level)
    lines = []
    for shift in shifts:
        ends = when(shift.ends_at, zone) if shift.ends_at else "…"
        by = f" — override by <@{shift.override.created_by}>" if shift.override else ""
        lines.append(f"• {when(shift.starts_at, zone)} → {ends}: <@{shift.user_id}>{by}")
    rotation = level.rotation
    about = (
        f"Rotation of {len(rotation.members)}: {mentions(rotation.members)}, "
        f"every {rotation.every.days} day{'s' if rotation.every.days != 1 else ''}"
    )
    if level.users:
        about += f"; also paged every time: {mentions(level.users)}"
    blocks = [header(title), *sections_for_lines(lines), context(about)]
    return message(f"{title}: " + "; ".join(f"<@{s.user_id}>" for s in shifts), blocks)


# --- overrides --------------------------------------------------------------------------------


def override_made(
    number: int, level: Level, override: Override, replaced: str | None, zone_note: bool
) -> Message:
    zone = zone_of(level)
    instead = f" instead of <@{replaced}>" if replaced and replaced != override.user_id else ""
    text = (
        f":arrows_counterclockwise: <@{override.user_id}> is on call for "
        f"{level_title(number, level)}{instead} until {when(override.ends_at, zone)}. "
        "Pages from now on go to them; `/oncall override cancel` ends it early."
    )
    if zone_note:
        text += (
            f" (The time you gave has no zone, so it was read as {when(override.ends_at, zone)}.)"
        )
    return message(text, [section(text)])


def override_told(number: int, level: Level, override: Override) -> Message:
    """The DM to the person an override puts on call."""
    text = (
        f":pager: <@{override.created_by}> put you on call for {level_title(number, level)} "
        f"until {when(override.ends_at, zone_of(level))}: its pages come to you until then."
    )
    return message(text, [section(text)])


def cancelled(ended: Sequence[Override], levels: Sequence[Level]) -> Message:
    if not ended:
        text = "There is no override in effect to cancel."
        return message(text, [section(text)])
    lines = [":wastebasket: Ended now (the rotation has those turns again):"]
    lines += [override_line(o, levels, ended=True) for o in ended]
    return message(lines[0], sections_for_lines(lines))


# --- hand-offs --------------------------------------------------------------------------------


def _open_lines(work: OpenWork) -> list[str]:
    if not (work.incidents or work.alerts or work.locks):
        return ["Nothing is open: no incidents, no firing alerts, no locks."]
    lines = []
    if work.incidents:
        lines.append(f"*Open incidents* ({len(work.incidents)})")
        lines += [
            f"• *{incident_name(i.id)}* · SEV {i.severity} · {escape(i.summary)} — "
            f"{status_line(i, plan_of(i))}"
            for i in work.incidents[:MAX_LINES]
        ]
    if work.alerts:
        lines.append(f"*Firing alerts* ({len(work.alerts)})")
        lines += [
            f"• {escape(alert_title(a))} · {a.level}"
            + (" (flapping)" if a.status == "flapping" else "")
            for a in work.alerts[:MAX_LINES]
        ]
    if work.locks:
        lines.append(f"*Locks* ({len(work.locks)})")
        lines += [f"• *{lock.environment}* {lock_holder(lock)}" for lock in work.locks[:MAX_LINES]]
    return lines


def handoff_dm(handoff: Handoff) -> Message:
    zone = zone_of(handoff.level)
    outgoing = f", taking over from {mentions(handoff.outgoing)}" if handoff.outgoing else ""
    text = (
        f":pager: You are on call for {level_title(handoff.number, handoff.level)} from "
        f"{when(handoff.at, zone)} until {when(handoff.until, zone)}{outgoing}."
    )
    blocks = [section(text), *sections_for_lines(_open_lines(handoff.open))]
    return message(text, blocks)


def handoff_line(handoff: Handoff) -> Message:
    zone = zone_of(handoff.level)
    outgoing = f" from {mentions(handoff.outgoing)}" if handoff.outgoing else ""
    where = level_title(handoff.number, handoff.level)
    text = (
        f":arrows_counterclockwise: On-call hand-off, {where}: "
        f"{mentions(handoff.incoming)} takes over{outgoing} until {when(handoff.until, zone)}."
    )
    return message(text, [section(text)])
