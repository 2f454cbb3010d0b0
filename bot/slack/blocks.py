"""Block Kit builders: every message the bot sends is made here.

Slack rejects a message that breaks a Block Kit limit (invalid_blocks), so the limits are
enforced where blocks are made: text is cut to fit, long lists are split across sections.
User-supplied text is escaped before it goes into mrkdwn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from bot.runbook.health.health import Health, HealthResult
from bot.runbook.levels import Level
from bot.slack.access import Usage
from bot.slack.chat import Message

Block = dict[str, Any]

MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
SECTION_FIELD_MAX = 2000
HEADER_MAX = 150
CONTEXT_ELEMENTS_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
FALLBACK_TEXT_MAX = 4000
ECHO_MAX = 40  # how much of a user's bad input is quoted back

HEALTH_EMOJI = {
    Health.HEALTHY: ":large_green_circle:",
    Health.DEGRADED: ":large_yellow_circle:",
    Health.UNHEALTHY: ":red_circle:",
}
LEVEL_EMOJI = {
    Level.NORMAL: ":large_green_circle:",
    Level.WARNING: ":large_yellow_circle:",
    Level.CRITICAL: ":red_circle:",
}
PENDING_EMOJI = ":hourglass_flowing_sand:"


def escape(text: str) -> str:
    """Make user text inert in mrkdwn: no mentions, links or formatting smuggled in."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# In a message's `text`, `<` opens Slack markup when it is followed by `!` (<!channel>,
# <!here>, <!subteam^…>), `@` or `#` (a mention) or a scheme (<https://…|label>, <mailto:…>).
_MARKUP = re.compile(r"<(?=[!@#]|[A-Za-z][A-Za-z0-9+.-]*:)")
# The only markup the bot itself writes in a fallback: a person or a channel, by id.
_OWN_MENTION = re.compile(r"<@[UW][A-Z0-9]+>|<#[CGD][A-Z0-9]+>")


def fallback_text(text: str) -> str:
    """A message's `text` (what notifications show, read as mrkdwn) made inert: every `<` that
    would open a mention, a broadcast or a link becomes `&lt;`, except the bot's own `<@U…>`
    and `<#C…>`. So a `<!channel>` in a git tag, in a version a service reports or in an
    alert's reading pings nobody. (Builders escape the outside text they put in a fallback
    with `escape` besides; `<env>` in a usage line stays as it is.)"""
    pieces, last = [], 0
    for own in _OWN_MENTION.finditer(text):
        pieces += [_MARKUP.sub("&lt;", text[last : own.start()]), own[0]]
        last = own.end()
    pieces.append(_MARKUP.sub("&lt;", text[last:]))
    return "".join(pieces)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(duration: timedelta) -> str:
    """A duration the way the config and the commands write it: 30s, 15m, 1h30m."""
    seconds = max(0, round(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


def echo(user_text: str) -> str:
    """Quote a piece of user input back, short and inert, as inline code."""
    cleaned = " ".join(user_text.split()).replace("`", "'")
    return f"`{escape(cut(cleaned, ECHO_MAX))}`"


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": cut(text, HEADER_MAX)}}


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_TEXT_MAX)}}


def section_fields(*fields: str) -> Block:
    """A section of short mrkdwn fields, shown two to a row (at most 10, each cut to fit)."""
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": cut(f, SECTION_FIELD_MAX)}
            for f in fields[:SECTION_FIELDS_MAX]
        ],
    }


def context(*elements: str) -> Block:
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": cut(e, SECTION_TEXT_MAX)}
            for e in elements[:CONTEXT_ELEMENTS_MAX]
        ],
    }


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": cut(text, BUTTON_TEXT_MAX)},
        "action_id": action_id,
        "value": value[:BUTTON_VALUE_MAX],
    }
    if style:
        element["style"] = style
    return element


def sections_for_lines(lines: Sequence[str]) -> list[Block]:
    """Pack lines into as few sections as fit Slack's 3,000-character section limit."""
    sections: list[Block] = []
    chunk = ""
    for line in lines:
        line = cut(line, SECTION_TEXT_MAX)
        if chunk and len(chunk) + 1 + len(line) > SECTION_TEXT_MAX:
            sections.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        sections.append(section(chunk))
    return sections


def sections_within(
    lines: Sequence[str], max_sections: int, more: Callable[[int], str]
) -> list[Block]:
    """sections_for_lines in at most max_sections; if the lines need more, the last section
    says what was left out: `more(n)` for the n lines (from the end) that did not fit."""
    sections = sections_for_lines(lines)
    if len(sections) <= max_sections:
        return sections
    kept: list[Block] = []
    chunk = ""
    shown = 0
    for line in lines:
        line = cut(line, SECTION_TEXT_MAX)
        if chunk and len(chunk) + 1 + len(line) > SECTION_TEXT_MAX:
            kept.append(section(chunk))
            chunk = ""
            if len(kept) == max_sections - 1:
                break
        chunk = f"{chunk}\n{line}" if chunk else line
        shown += 1
    return [*kept, section(more(len(lines) - shown))]


def message(text: str, blocks: list[Block]) -> Message:
    if len(blocks) > MAX_BLOCKS:
        blocks = [*blocks[: MAX_BLOCKS - 1], context("… more than Slack can show in one message")]
    return Message(text=cut(fallback_text(text), FALLBACK_TEXT_MAX), blocks=blocks)


# --- help, usage and errors -------------------------------------------------------------------


def usage(command: str, usages: Sequence[Usage], problem: str | None) -> Message:
    lines = [f"`{u.syntax}` — {u.summary}" for u in usages]
    blocks: list[Block] = []
    if problem:
        blocks.append(section(f":warning: {problem}"))
    if usages:  # a button press has no usage to show, only the problem
        blocks.append(section(f"*Usage of {command}*"))
        blocks.extend(sections_for_lines(lines))
    fallback = f"{problem + ' ' if problem else ''}Usage: " + "; ".join(u.syntax for u in usages)
    return message(fallback, blocks)


def unknown_command(command: str, known: Sequence[str]) -> Message:
    text = f"This bot does not handle {echo(command)}. It knows: {', '.join(known)}."
    return message(text, [section(text)])


def notice(text: str, emoji: str = "") -> Message:
    """A one-section message: an answer, a refusal, a line in a thread."""
    shown = f"{emoji} {text}" if emoji else text
    return message(text, [section(shown)])


def denied(reason: str) -> Message:
    return message(reason, [section(f":no_entry: {reason}")])


def busy(reason: str, retry_after_s: float) -> Message:
    """A limit reached: nothing ran; when to try again."""
    text = f"{reason}: nothing was run. Busy — try again in {retry_after_s:.0f} s."
    return message(text, [section(f":hourglass: {text}")])


def wait_your_turn(reason: str) -> Message:
    text = f"Busy: {reason}. Nothing was run."
    return message(text, [section(f":hourglass: {text}")])


def internal_error(what: str, reference: int | None = None) -> Message:
    ref = f" (audit #{reference})" if reference is not None else ""
    text = (
        f"`{what}` failed with an internal error{ref}. Nothing more will run for this request; "
        "the bot's log has the details for whoever runs the bot."
    )
    return message(text, [section(f":x: {text}")])


def store_unreachable(what: str, *, press: bool) -> Message:
    """The store did not answer: nothing was done, and the user knows to try again."""
    again = "Press the button again" if press else f"Run `{what}` again"
    done = "Your press was not recorded" if press else f"`{what}` was not carried out"
    text = (
        f"The bot's database is unreachable, so nothing was done: {done}. {again} in a "
        "minute; if it keeps failing, tell whoever runs the bot (the log names the database)."
    )
    return message(text, [section(f":warning: {text}")])


# --- health --------------------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def health_line(name: str, result: HealthResult | None) -> str:
    if result is None:
        return f"{PENDING_EMOJI} *{name}* — checking…"
    facts = [result.health.value]
    facts.append(f"{result.latency_ms:.0f} ms" if result.latency_ms is not None else "no answer")
    if result.version:
        facts.append(f"v{escape(result.version.removeprefix('v'))}")
    if result.health is not Health.HEALTHY and result.streak > 1:
        facts.append(f"{_ordinal(result.streak)} {result.health.value.lower()} check in a row")
    line = f"{HEALTH_EMOJI[result.health]} *{name}* — " + " · ".join(facts)
    for reason in result.reasons[:3]:
        line += f"\n        › {escape(reason)}"
    return line


def health_report(
    results: Mapping[str, HealthResult | None],
    *,
    scope: str,
    requested_by: str,
    warning_ms: float,
    critical_ms: float,
) -> Message:
    """The /health answer: a line per environment, filled in as the checks come back."""
    done = [r for r in results.values() if r is not None]
    title = "Health · all environments" if scope == "all" else f"Health · {scope}"
    blocks: list[Block] = [header(title)]
    entries = list(results.items())
    room = MAX_BLOCKS - 3  # header, context, actions
    lines = [health_line(n, r) for n, r in entries]
    if len(sections_for_lines(lines)) > room:
        # More than one message holds: the worst first, so what is cut is the healthy end.
        entries.sort(key=lambda item: -item[1].health.rank if item[1] else 1)
        lines = [health_line(n, r) for n, r in entries]

    def left_out(n: int) -> str:
        return f"… and {n} more: " + _counts([r for _, r in entries[len(entries) - n :]])

    blocks.extend(sections_within(lines, room, left_out))
    checked = max((r.checked_at for r in done), default=None)
    when = f"checked {checked:%H:%M:%S} UTC · " if checked else ""
    blocks.append(
        context(
            f"Requested by <@{requested_by}> · {when}"
            f"healthy under {warning_ms:.0f} ms, unhealthy at {critical_ms:.0f} ms or no answer"
        )
    )
    if len(done) == len(results):
        blocks.append(
            {
                "type": "actions",
                "block_id": "health_actions",
                "elements": [button("Check again", "health_recheck", scope)],
            }
        )
    return message(_health_summary(results, scope), blocks)


def _health_summary(results: Mapping[str, HealthResult | None], scope: str) -> str:
    if scope != "all":
        result = results.get(scope)
        if result is None:
            return f"Checking health of {scope}…"
        return f"Health of {scope}: {result.health.value}" + (
            f" — {escape(result.reasons[0])}" if result.reasons else ""
        )
    return "Health of all environments: " + _counts(list(results.values()))


def _counts(results: Sequence[HealthResult | None]) -> str:
    """'197 Healthy, 2 Degraded, 1 checking'."""
    counts = {h: 0 for h in Health}
    pending = 0
    for result in results:
        if result is None:
            pending += 1
        else:
            counts[result.health] += 1
    parts = [f"{n} {h.value}" for h, n in counts.items() if n]
    if pending:
        parts.append(f"{pending} checking")
    return ", ".join(parts)
