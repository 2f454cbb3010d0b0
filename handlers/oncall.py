"""/oncall: who is on call for each level, a level's next weeks, overrides; the hand-off timer."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.config import parse_duration
from bot.runbook.oncall.handoffs import HANDOFF_TIMER
from bot.slack.access import Usage, refusal
from bot.slack.blocks import echo
from bot.slack.chat import Message
from bot.slack.dispatch import Context, command, timer
from bot.slack.oncall.oncall import Refused
from bot.slack.services import Services
from bot.store import Timer

MAX_TEXT = 200
# Slack sends a mention as <@U123|name> when the command escapes users, <@U123> otherwise.
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>|([UW][A-Z0-9]+)")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{1,2}:[0-9]{2}\S*")
_WHEN_HINT = "like `until 2026-12-08 09:00` (a zone is optional: `09:00+01:00`)"


@dataclass(frozen=True)
class Show:
    level: str | None  # None: every level, now


@dataclass(frozen=True)
class Swap:
    user_id: str
    level: int | None
    length: timedelta | None
    until: datetime | None


@dataclass(frozen=True)
class Cancel:
    whose: str | None


def user_id(word: str) -> str | None:
    match = _USER.fullmatch(word)
    return (match[1] or match[2]) if match else None


def parse(text: str) -> Show | Swap | Cancel | Literal["help"] | str:
    """What /oncall's text asks for; a plain str is what is wrong with it."""
    if len(text) > MAX_TEXT:
        return f"That is {len(text):,} characters; too long for /oncall."
    words = text.split()
    if words == ["help"]:
        return "help"
    if not words or words[0].lower() != "override":
        return Show(" ".join(words) or None)
    rest = words[1:]
    if [word.lower() for word in rest[:1]] == ["cancel"]:
        if len(rest) > 2:
            return "`/oncall override cancel` takes at most whose override (approvers)."
        whose = user_id(rest[1]) if len(rest) == 2 else None
        if len(rest) == 2 and whose is None:
            return _not_a_user(rest[1])
        return Cancel(whose)
    if not rest:
        return "Name who takes over: `/oncall override @someone [for 8h | until …] [level <n>]`."
    who = user_id(rest[0])
    if who is None:
        return _not_a_user(rest[0])
    return _swap(who, rest[1:])


def _not_a_user(word: str) -> str:
    return f"{echo(word)} is not a person: mention them (@name) or give their user id (U012AB3CD)."


def _swap(who: str, words: list[str]) -> Swap | str:
    length: timedelta | None = None
    until: datetime | None = None
    level: int | None = None
    seen: set[str] = set()
    while words:
        word, words = words[0].lower(), words[1:]
        if word in seen:
            return f"Give `{word}` once."
        seen.add(word)
        if word not in ("for", "until", "level"):
            return f"Unknown word {echo(word)}: after the person come `for`, `until` and `level`."
        if not words:
            return f"`{word}` needs a value."
        if word == "for":
            try:
                length = parse_duration(words[0])
            except ValueError:
                return f"{echo(words[0])} is not a duration (like 8h, 30m, 2d)."
            if length <= timedelta(0):
                return "The override needs to last longer than that."
            words = words[1:]
        elif word == "until":
            dated = _DATE.fullmatch(words[0]) is not None
            taken = 2 if dated and len(words) > 1 and _TIME.fullmatch(words[1]) else 1
            if dated and taken == 1:
                return f"Give the time of day too, {_WHEN_HINT}."
            try:
                until = datetime.fromisoformat("T".join(words[:taken]))
            except ValueError:
                return f"{echo(' '.join(words[:taken]))} is not a date and time {_WHEN_HINT}."
            words = words[taken:]
        else:
            if not words[0].isdigit():
                return f"`level` takes a number, not {echo(words[0])}."
            level, words = int(words[0]), words[1:]
    if length is not None and until is not None:
        return "Give `for` or `until`, not both."
    return Swap(who, level, length, until)


@command(
    "/oncall",
    Usage(
        "/oncall [<level>]",
        "who is on call now for each level, until when, the next hand-offs and overrides; "
        "with a level (number or name), its next 4 weeks",
    ),
    Usage(
        "/oncall override <@user> [for <duration>|until <time>] [level <n>]",
        "put someone on call for a level until a time (default: its next hand-off); for "
        "whoever is on call for it now, deployers and approvers",
        role="responders",
        then="whoever is on call for that level now, deployers and approvers",
    ),
    Usage(
        "/oncall override cancel",
        "end the overrides you made or are on call by (approvers: `cancel @someone`)",
        then="someone else's (`cancel @someone`): approvers only",
    ),
    Usage("/oncall help", "show this help"),
)
async def oncall(ctx: Context) -> None:
    """Who is on call, each level's rotation, and temporary swaps."""
    wanted = parse(ctx.request.text)
    if wanted == "help":
        return await ctx.answer_help()
    if isinstance(wanted, str):
        return await ctx.answer_usage(wanted)
    desk = ctx.services.oncall
    if isinstance(wanted, Show):
        return await _show(ctx, wanted)
    if isinstance(wanted, Cancel):
        if wanted.whose not in (None, ctx.user_id) and not ctx.may("approvers"):
            reason, hint = refusal("approvers", "cancel someone else's override")
            return await ctx.deny(reason, f"{hint} `/oncall override cancel` ends yours.")
        await ctx.ack()
        ctx.hand_off(lambda: _reply(ctx, desk.cancel(ctx.user_id, wanted.whose)))
        return
    checked = await desk.check_override(
        ctx.user_id,
        wanted.user_id,
        level_number=wanted.level,
        length=wanted.length,
        until=wanted.until,
        privileged=ctx.may("deployers") or ctx.may("approvers"),
    )
    if isinstance(checked, Refused):
        return await ctx.deny(checked.reason)
    if isinstance(checked, str):
        return await ctx.answer_usage(checked)
    await ctx.ack()
    ctx.hand_off(lambda: _reply(ctx, desk.override(checked, ctx.user_id)))


async def _show(ctx: Context, wanted: Show) -> None:
    desk = ctx.services.oncall
    if wanted.level is None:
        await ctx.ack()
        ctx.hand_off(lambda: _reply(ctx, desk.overview()))
        return
    found = desk.find_level(wanted.level)
    if isinstance(found, str):
        return await ctx.answer_usage(found)
    await ctx.ack()
    ctx.hand_off(lambda: _reply(ctx, desk.schedule(*found)))


async def _reply(ctx: Context, answering: Awaitable[Message]) -> str:
    """Work after the ack: the answer goes to the asking user alone; its text is audited."""
    answer = await answering
    await ctx.reply_privately(answer)
    return answer.text[:200]


@timer(HANDOFF_TIMER)
async def handoff(services: Services, due: Timer) -> None:
    """A rotation's turn changed: tell the incoming person what is open, and the channel."""
    await services.oncall.on_handoff_timer(due)
