"""Block Kit for `/deploy status` (what runs now, the locks, the last CI runs) and
`/deploy history` (the last changes of an environment)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.ci import CiRun
from bot.runbook.changes.kinds import step_title
from bot.slack.blocks import Block, cut, escape, header, message, section, sections_for_lines
from bot.slack.changes.change_blocks import OUTCOME_EMOJI, OUTCOME_WORDS, day_and_time, link, when
from bot.slack.changes.lock_blocks import lock_holder
from bot.slack.chat import Message
from bot.store import Deployment, EnvironmentLock

CI_EMOJI = {"success": ":white_check_mark:", "failure": ":x:", "cancelled": ":no_entry:"}


def deploy_status(
    *,
    scope: str,
    running: Sequence[Deployment],
    locks: Sequence[EnvironmentLock],
    ci: tuple[str, Sequence[CiRun]] | str | None,
    workflow: str | None,
) -> Message:
    blocks: list[Block] = [header(f"Deploy status · {scope}")]
    if running:
        lines = ["*Running now*"]
        for d in running:
            lines.append(
                f":hourglass_flowing_sand: {d.kind} #{d.id} of "
                f"*{escape(show_version(d.version)) if d.version else 'a new version'}* to "
                f"*{d.environment}* by <@{d.requested_by}> — at "
                f"{escape(step_title(d.step).lower())}, since "
                f"{when(d.started_at)} ({link(d.permalink, 'progress')})"
            )
        blocks.extend(sections_for_lines(lines))
    else:
        blocks.append(section("*Running now:* nothing"))
    if locks:
        lines = ["*Locks*"] + [f":lock: *{lk.environment}* — {lock_holder(lk)}" for lk in locks]
        blocks.extend(sections_for_lines(lines))
    else:
        blocks.append(section("*Locks:* none"))
    if isinstance(ci, str):
        blocks.append(
            section(f"*CI ({escape(workflow or 'workflow')}):* cannot check: {escape(ci)}")
        )
    elif ci is not None:
        branch, runs = ci
        lines = [f"*CI: last {len(runs)} runs of {escape(workflow or '')} on {escape(branch)}*"]
        for run in runs:
            emoji = CI_EMOJI.get(run.outcome, ":hourglass_flowing_sand:")
            age = f" · {day_and_time(run.created_at)}" if run.created_at else ""
            lines.append(
                f"{emoji} {link(run.url, escape(cut(run.title, 80)) or str(run.id))} — "
                f"{escape(run.outcome)} · `{escape(run.sha[:7])}`{age}"
            )
        blocks.extend(sections_for_lines(lines))
    summary = f"{len(running)} running, {len(locks)} locked"
    return message(f"Deploy status ({scope}): {summary}", blocks)


def deploy_history(env: str, deployments: Sequence[Deployment]) -> Message:
    blocks: list[Block] = [header(f"Deploy history · {env}")]
    if not deployments:
        blocks.append(section(f"No deployments of {env} yet."))
        return message(f"No deployments of {env} yet.", blocks)
    lines = []
    for d in deployments:
        flags = [f"`--{k.replace('_', '-')}`" for k, on in sorted(d.options.items()) if on]
        took = human_duration(d.duration.total_seconds()) if d.duration else "—"
        approved = f" · approved by <@{d.approved_by}>" if d.approved_by else ""
        if d.state == "cancelled" and d.cancel_requested_by:
            approved += f" · cancelled by <@{d.cancel_requested_by}>"
        version = escape(show_version(d.version)) if d.version else "no version"
        lines.append(
            f"{OUTCOME_EMOJI.get(d.state, ':grey_question:')} {day_and_time(d.started_at)} · "
            f"{d.kind} #{d.id} *{version}* by <@{d.requested_by}>{approved} · "
            f"{OUTCOME_WORDS.get(d.state, d.state)} · {took}"
            + (f" · {' '.join(flags)}" if flags else "")
        )
    blocks.extend(sections_for_lines(lines))
    return message(f"Last {len(deployments)} deployments of {env}", blocks)
