"""Block Kit for /rollback: what can be rolled back to, the summary in the alerts channel, and
the call to page someone when a failed rollback could not open its incident (the checklist
itself is change_blocks.ChangeView; the follow-up checks are aftercare_blocks')."""

from __future__ import annotations

from bot.runbook.changes.activate import human_size, show_version
from bot.runbook.changes.rollback_plan import (
    BackupRow,
    ReleaseRow,
    RollbackPlan,
    RollbackRefused,
    Survey,
)
from bot.slack.blocks import Block, context, escape, header, message, section, sections_for_lines
from bot.slack.changes.change_blocks import day_and_time, link
from bot.slack.chat import Message
from bot.store import Deployment

HOSTS_NAMED = 3


def _hosts(hosts: tuple[str, ...] | list[str]) -> str:
    named = ", ".join(f"`{escape(h)}`" for h in hosts[:HOSTS_NAMED])
    more = len(hosts) - HOSTS_NAMED
    return f"{named} and {more} more" if more > 0 else named


def _where(row: ReleaseRow | BackupRow, survey: Survey) -> str:
    count = len(survey.hosts)
    if survey.everywhere(row):
        return "on every host" if count > 1 else ""
    missing = [v.target for v in survey.hosts if v.target not in row.on]
    return f"on {len(row.on)} of {count} hosts (not on {_hosts(missing)})"


def _release_line(row: ReleaseRow, survey: Survey, chosen: bool) -> str:
    count = len(survey.hosts)
    if row.bad is not None:
        state = ":x: *bad*" + (f": {escape(row.bad)}" if row.bad else "")
    elif row.current_on:
        state = ":large_green_circle: *current*"
        if len(row.current_on) < count:
            state += f" on {_hosts(list(row.current_on))}"
    elif row.rolled_back is not None:
        state = ":leftwards_arrow_with_hook: rolled back from" + (
            f" ({escape(row.rolled_back)})" if row.rolled_back else ""
        )
    elif row.good:
        state = ":white_check_mark: good"
    elif row.ran:
        state = ":white_small_square: ran"
    else:
        state = ":heavy_minus_sign: never ran"
    version = f"*{escape(show_version(row.version))}*" if row.version else "_no version_"
    parts = [f"`{escape(row.id)}`", version]
    if row.installed_at is not None:
        parts.append(f"installed {day_and_time(row.installed_at)}")
    parts.append(state)
    if row.backup:
        parts.append(f"restored from `{escape(row.backup)}`")
    where = _where(row, survey)
    if where:
        parts.append(where)
    line = " · ".join(parts)
    return f"{line}  ← `/rollback {survey.environment}` goes here" if chosen else line


def _backup_line(row: BackupRow, survey: Survey, chosen: bool) -> str:
    parts = [f"`{escape(row.name)}`"]
    if row.version:
        parts.append(f"of *{escape(show_version(row.version))}*")
    elif row.release:
        parts.append(f"of release `{escape(row.release)}`")
    parts += [day_and_time(row.taken_at), human_size(row.size)]
    where = _where(row, survey)
    parts.append(where or "on the host")
    if row.bad:
        parts.append(":x: *bad*: restored once and failed its health check")
    line = " · ".join(parts)
    return f"{line}  ← `/rollback {survey.environment}` restores this" if chosen else line


def listing(survey: Survey, default: RollbackPlan | RollbackRefused) -> Message:
    """`/rollback list <env>`: releases and backups newest first, and what no id would do."""
    env = survey.environment
    blocks: list[Block] = [header(f"Rollback targets · {env}")]
    for view in survey.unreadable:
        blocks.append(
            section(f":x: `{escape(view.target)}` cannot be read: {escape(view.error or '')}")
        )
    chosen = default.target if isinstance(default, RollbackPlan) else None
    rows = survey.releases()
    lines = ["*Releases kept on the hosts* (newest first)"]
    lines += [_release_line(r, survey, r.id == chosen) for r in rows] or ["_none_"]
    backups = survey.backups()
    lines.append("*Backup archives* (newest first; `/rollback backup " + env + "` takes one now)")
    lines += [_backup_line(b, survey, b.name == chosen) for b in backups] or ["_none_"]
    blocks.extend(sections_for_lines(lines))
    if isinstance(default, RollbackPlan):
        then = f"`/rollback {env}` now goes back to {escape(default.target_line())}"
        if default.kind == "release":
            then += " (an instant switch)"
        else:
            then += " (restored into a new release)"
    else:
        then = f"`/rollback {env}` now: {escape(default.reason)}"
    blocks.append(section(then))
    blocks.append(context(f"`/rollback {env} <id>` goes to exactly that release or backup."))
    fallback = f"{env}: {len(rows)} release(s) and {len(backups)} backup(s) kept; " + (
        f"/rollback {env} goes back to {default.target_line()}"
        if isinstance(default, RollbackPlan)
        else default.reason
    )
    return message(fallback, blocks)


# --- the summary in the alerts channel -----------------------------------------------------


def summary(
    deployment: Deployment,
    *,
    incident: str | None = None,
    followup: str | None = None,
) -> Message:
    """What happened, for the people who were not in the channel (the runbook's "notify
    stakeholders"); `followup` is added when the follow-up checks are over."""
    ok = deployment.state == "succeeded"
    env = deployment.environment
    state = "done" if ok else "FAILED"
    emoji = ":leftwards_arrow_with_hook:" if ok else ":rotating_light:"
    blocks: list[Block] = [
        header(f"Rollback of {env}: {state}"),
        section(f"{emoji} *{escape(deployment.summary)}*"),
    ]
    who = f"Asked by <@{deployment.requested_by}>"
    if deployment.approved_by:
        who += f", approved by <@{deployment.approved_by}>"
    who += f" · rollback #{deployment.id} · " + link(deployment.permalink, "its checklist")
    blocks.append(section(who))
    if incident:
        blocks.append(section(f":rotating_light: {escape(incident)}"))
    if followup:
        blocks.append(section(escape(followup)))
    elif ok:
        blocks.append(
            context("Follow-up checks run in its thread; a failing one is posted here too.")
        )
    return message(f"Rollback of {env}: {state}. {deployment.summary}", blocks)


def page_someone(env: str, deployment_id: int, problem: str) -> Message:
    text = (
        f":rotating_light: Rollback #{deployment_id} of {env} failed and no incident could be "
        f"opened ({escape(problem)}): page the on-call engineer now."
    )
    return message(text, [section(text)])
