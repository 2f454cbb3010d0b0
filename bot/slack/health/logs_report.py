"""/health <env> logs: the lines found on each host, labelled, with their counts by type.

Lines that fit go in the message; when any host's do not (or there are too many hosts), the
message keeps the counts and each host's last few lines, and every line goes in a text file
shared in the message's thread (files_upload_v2; the console saves it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.config import Environment, SshSettings
from bot.runbook.health.each_host import targets
from bot.runbook.health.log_search import HostLog, LogQuery, Which, search_logs
from bot.slack import blocks
from bot.slack.blocks import (
    MAX_BLOCKS,
    PENDING_EMOJI,
    SECTION_TEXT_MAX,
    Block,
    context,
    cut,
    escape,
    header,
    section,
)
from bot.slack.chat import Conversation, Message, Upload
from bot.slack.health.diagnose_blocks import counts_text
from bot.slack.health.diagnose_report import EDIT_EVERY_S
from bot.slack.live_message import LiveMessage

LINES_WHEN_FILED = 5  # per host in the message when the lines went into the file
INLINE_HOSTS = 10  # at most this many hosts' lines in the message itself
MATCH_SHOWN = 80  # characters of the matched text quoted back


async def report_logs(
    conversation: Conversation,
    env: Environment,
    ssh: SshSettings,
    query: LogQuery,
    *,
    requested_by: str,
) -> str:
    """Read every host's log, show what was found; returns a one-line summary."""
    names = targets(env)
    found: list[HostLog | None] = [None] * len(names)

    def render(filed: str | None = None) -> Message:
        return logs_message(env.name, query, names, found, requested_by=requested_by, filed=filed)

    live = LiveMessage(conversation, min_interval_s=EDIT_EVERY_S)
    await live.show(render())
    async for index, host_log in search_logs(env, ssh, query):
        found[index] = host_log
        if None in found:  # the last answer goes straight into the final message
            await live.show(render)
    results = [host_log for host_log in found if host_log is not None]
    if fits_in_message(results):
        final = render()
        await live.finish(final)
        return final.text
    upload = Upload(
        filename=f"logs-{env.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt",
        content=whole_text(env.name, query, names, found).encode(),
        title=cut(f"Logs of {env.name}: {describe(query)}", 200),
    )
    final = render(filed=upload.filename)
    await live.finish(final)
    thread = live.ref.ts if live.ref is not None else None
    where = await conversation.upload(upload, thread_ts=thread)
    shared = f"; all lines in {where}" if where else "; the file could not be shared"
    return final.text + shared


def describe(query: LogQuery) -> str:
    """'errors, the last 100, containing `x`' (plain text: escape it for Slack)."""
    which = {Which.ALL: "lines", Which.ERRORS: "errors", Which.WARNINGS: "warnings"}[query.which]
    text = f"{which}, the last {query.count:,}"
    if query.text is not None:
        shown = printable(query.text).replace("`", "'")
        text += f", containing `{cut(shown, MATCH_SHOWN)}`"
    return text


def printable(text: str) -> str:
    """User text with control characters (a NUL, a line break) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fits_in_message(results: list[HostLog]) -> bool:
    if len(results) > INLINE_HOSTS:
        return False
    return all(len(_lines_block(r.lines)) + 400 < SECTION_TEXT_MAX for r in results if r.lines)


def logs_message(
    env_name: str,
    query: LogQuery,
    names: list[str],
    found: list[HostLog | None],
    *,
    requested_by: str,
    filed: str | None = None,
) -> Message:
    body: list[Block] = [header(f"Logs · {env_name}"), section(f"*{escape(describe(query))}*")]
    pending = sum(1 for host_log in found if host_log is None)
    room = MAX_BLOCKS - len(body) - 2
    host_blocks = [
        section(_host_text(name, host_log, filed is not None))
        for name, host_log in zip(names, found, strict=True)
        if host_log is not None
    ]
    if len(host_blocks) > room:
        left = len(host_blocks) - room + 1
        host_blocks = [*host_blocks[: room - 1], section(f"… and {left} more hosts (in the file)")]
    body += host_blocks
    notes = [f"Requested by <@{requested_by}>", "secrets redacted"]
    if pending:
        notes.append(f"{PENDING_EMOJI} {pending} host{_s(pending)} still to answer")
    if filed:
        notes.append(f"every line is in `{escape(filed)}`, in this message's thread")
    body.append(context(" · ".join(notes)))
    return blocks.message(_summary(env_name, query, found, filed), body)


def _host_text(name: str, host_log: HostLog, filed: bool) -> str:
    title = f"*{escape(name)}* · `{escape(host_log.path)}`"
    if host_log.problem is not None:
        return f"{title}\n:warning: {escape(host_log.problem)}"
    count = len(host_log.lines)
    cut = " (the host had more than 900 KB of them: the oldest left out)" if host_log.cut else ""
    text = f"{title}\n{count:,} line{_s(count)}{cut}"
    if host_log.tally is not None:
        text += f" · {counts_text(host_log.tally)}"
    lines = host_log.lines[-LINES_WHEN_FILED:] if filed else host_log.lines
    if lines:
        last = f"the last {len(lines)}:" if filed and len(lines) < count else ""
        text += f"\n{last}{_lines_block(lines)}"
    return text


def _lines_block(lines: tuple[str, ...]) -> str:
    return "```" + "\n".join(escape(line) for line in lines) + "```"


def whole_text(
    env_name: str, query: LogQuery, names: list[str], found: list[HostLog | None]
) -> str:
    """The file: every host's lines, each host under a labelled rule."""
    out = [f"/health {env_name} logs: {describe(query)} (secrets redacted)", ""]
    for name, host_log in zip(names, found, strict=True):
        if host_log is None:
            continue
        if host_log.problem is not None:
            out += [f"== {name} · {host_log.path} · {host_log.problem} ==", ""]
            continue
        out.append(f"== {name} · {host_log.path} · {len(host_log.lines):,} lines ==")
        out += [*host_log.lines, ""]
    return "\n".join(out)


def _summary(env_name: str, query: LogQuery, found: list[HostLog | None], filed: str | None) -> str:
    done = [host_log for host_log in found if host_log is not None]
    if len(done) < len(found):
        return f"Reading the logs of {env_name}: {len(done)} of {len(found)} hosts"
    lines = sum(len(host_log.lines) for host_log in done)
    problems = sum(1 for host_log in done if host_log.problem is not None)
    text = (
        f"Logs of {env_name} ({escape(describe(query))}): {lines:,} line{_s(lines)} from "
        f"{len(done)} host{_s(len(done))}"
    )
    if problems:
        text += f", {problems} could not be read"
    return text + (f"; all in {filed}" if filed else "")


def _s(n: int) -> str:
    return "" if n == 1 else "s"
