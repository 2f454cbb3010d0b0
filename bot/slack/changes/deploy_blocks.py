"""Block Kit for /deploy: the live checklist, its thread, approvals, status, history, locks.

The checklist is one message updated in place as the procedure's events arrive
(`DeployView.apply`); failures' output and a dry run's commands go in its thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.runbook.changes import rollback
from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.checklist import ChecklistItem
from bot.runbook.changes.ci import CiRun
from bot.runbook.changes.deploy import ROLLBACK, STEPS
from bot.runbook.changes.progress import (
    Event,
    Finished,
    Note,
    Outcome,
    StepDone,
    StepFailed,
    StepPlanned,
    StepSkipped,
    StepStarted,
    VersionKnown,
)
from bot.slack.blocks import (
    SECTION_TEXT_MAX,
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
from bot.store import Approval, Deployment, EnvironmentLock

STATE_EMOJI = {
    "pending": ":white_small_square:",
    "running": ":hourglass_flowing_sand:",
    "ok": ":white_check_mark:",
    "failed": ":x:",
    "skipped": ":heavy_minus_sign:",
    "planned": ":memo:",
}
OUTCOME_EMOJI = {
    "succeeded": ":white_check_mark:",
    "planned": ":memo:",
    "failed": ":x:",
    "rolled_back": ":leftwards_arrow_with_hook:",
    "rollback_failed": ":rotating_light:",
    "cancelled": ":no_entry:",
    "interrupted": ":warning:",
    "running": ":hourglass_flowing_sand:",
}
OUTCOME_WORDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "rolled back",
    "rollback_failed": "ROLLBACK FAILED",
    "cancelled": "cancelled",
    "interrupted": "interrupted",
    "running": "running",
}
# Every step's title by its key: a deploy's, its automatic rollback's, /rollback's and a backup's
# (the keys they share have the same titles).
STEP_TITLES: dict[str, str] = {**dict((*STEPS, ROLLBACK)), **rollback.TITLES}
HOSTS_LISTED = 6  # more hosts than this are summed up per step, failures still named
CANCEL = "deploy_cancel"
ROLL_BACK = "deploy_rollback"
UNLOCK_CONFIRM = "deploy_unlock_confirm"
APPROVE = "approval_approve"
REJECT = "approval_reject"


def when(at: datetime) -> str:
    return f"{at:%H:%M:%S} UTC"


def day_and_time(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def link(url: str | None, text: str) -> str:
    return f"<{url}|{text}>" if url else text


@dataclass
class HostLine:
    state: str = "running"
    detail: str = ""
    seconds: float | None = None


@dataclass
class StepLine:
    key: str
    title: str
    state: str = "pending"
    detail: str = ""
    seconds: float | None = None
    hosts: dict[str, HostLine] = field(default_factory=dict)
    commands: tuple[str, ...] = ()


class DeployView:
    """What a deploy's (or a rollback's) message shows, kept up to date from its events."""

    def __init__(
        self,
        *,
        kind: str,
        environment: str,
        version: str | None,
        requested_by: str,
        approved_by: str | None = None,
        flags: Sequence[str] = (),
        deployment_id: int | None = None,
        started_at: datetime | None = None,
        steps: Sequence[tuple[str, str]] = STEPS,
        title: str | None = None,
    ) -> None:
        self.kind = kind
        self._title = title
        self.environment = environment
        self.version = version
        self.requested_by = requested_by
        self.approved_by = approved_by
        self.flags = tuple(flags)
        self.deployment_id = deployment_id
        self.started_at = started_at
        self.dry_run = "--dry-run" in self.flags
        self.steps: dict[str, StepLine] = {key: StepLine(key, title) for key, title in steps}
        self.notes: list[str] = []
        self.outcome: Outcome | None = None
        self.failures: list[StepFailed] = []

    def apply(self, event: Event) -> None:
        if isinstance(event, VersionKnown):
            self.version = event.version
        elif isinstance(event, Note):
            self.notes.append(event.text)
        elif isinstance(event, Finished):
            self.outcome = event.outcome
            self.version = event.outcome.version or self.version
            for line in self.steps.values():
                if line.state == "running":
                    line.state = "failed" if not event.outcome.ok else "ok"
        elif isinstance(event, StepStarted | StepDone | StepSkipped | StepFailed | StepPlanned):
            self._apply_step(event)

    def _line(self, key: str) -> StepLine:
        if key not in self.steps:
            self.steps[key] = StepLine(key, STEP_TITLES.get(key, key))
            if key == ROLLBACK[0] and "unlock" in self.steps:
                # Rolling back comes before unlocking: keep the checklist in the order it ran.
                unlock = self.steps.pop("unlock")
                self.steps["unlock"] = unlock
        return self.steps[key]

    def _apply_step(
        self, event: StepStarted | StepDone | StepSkipped | StepFailed | StepPlanned
    ) -> None:
        line = self._line(event.step)
        if isinstance(event, StepPlanned):
            line.state, line.commands, line.detail = "planned", event.commands, event.note
            return
        if isinstance(event, StepSkipped):
            line.state, line.detail = "skipped", event.reason
            return
        host = getattr(event, "host", "")
        if isinstance(event, StepFailed):
            self.failures.append(event)
        state = {StepStarted: "running", StepDone: "ok", StepFailed: "failed"}[type(event)]
        detail = event.error if isinstance(event, StepFailed) else event.detail
        seconds = None if isinstance(event, StepStarted) else event.seconds
        if host:
            entry = line.hosts.setdefault(host, HostLine())
            entry.state, entry.detail, entry.seconds = state, detail, seconds
            states = {h.state for h in line.hosts.values()}
            line.state = (
                "failed" if "failed" in states else "running" if "running" in states else "ok"
            )
        else:
            line.state, line.detail, line.seconds = state, detail, seconds

    @property
    def title(self) -> str:
        if self._title is not None:
            return self._title
        version = show_version(self.version) if self.version else ""
        if self.kind == "rollback":
            return f"Roll back {self.environment}" + (f" from {version}" if version else "")
        what = (
            f"Deploy {version} to {self.environment}"
            if version
            else f"Deploy to {self.environment}"
        )
        return f"Dry run: {what}" if self.dry_run else what

    def message(self, *, cancellable: bool = False) -> Message:
        blocks: list[Block] = [header(self.title)]
        who = f"Requested by <@{self.requested_by}>"
        if self.approved_by:
            who += f" · approved by <@{self.approved_by}>"
        if self.flags:
            who += " · " + " ".join(f"`{f}`" for f in self.flags)
        blocks.append(section(who))
        blocks.extend(sections_for_lines([self._render(line) for line in self.steps.values()]))
        for note in self.notes:
            blocks.append(section(f":leftwards_arrow_with_hook: {escape(note)}"))
        if self.outcome is not None:
            emoji = OUTCOME_EMOJI.get(self.outcome.state, ":grey_question:")
            result = f"{emoji} *{escape(self.outcome.summary)}*{_by(self.outcome)}"
            if any(f.output for f in self.failures) and not self.outcome.ok:
                result += "\nThe failing step's last lines of output are in the thread."
            blocks.append(section(result))
        facts = []
        if self.deployment_id is not None:
            facts.append(f"{self.kind} #{self.deployment_id}")
        if self.started_at is not None:
            facts.append(f"started {when(self.started_at)}")
        if self.outcome is not None and self.outcome.seconds >= 0.05:
            facts.append(f"took {human_duration(self.outcome.seconds)}")
        if facts:
            blocks.append(context(" · ".join(facts)))
        if cancellable and self.outcome is None and self.deployment_id is not None:
            blocks.append(
                {
                    "type": "actions",
                    "block_id": "deploy_actions",
                    "elements": [button("Cancel", CANCEL, str(self.deployment_id), "danger")],
                }
            )
        return message(self.fallback(), blocks)

    def fallback(self) -> str:
        if self.outcome is not None:
            return self.outcome.summary + _by(self.outcome)
        running = [line.title for line in self.steps.values() if line.state == "running"]
        doing = f": {running[0].lower()}…" if running else "…"
        return f"{self.title}{doing}"

    def _render(self, line: StepLine) -> str:
        text = f"{STATE_EMOJI[line.state]} *{line.title}*"
        if line.detail:
            text += f" — {escape(line.detail)}"
        if line.seconds is not None and line.seconds >= 0.05:
            text += f" ({human_duration(line.seconds)})"
        if line.state == "planned" and line.commands:
            text += f" · {len(line.commands)} command{'s' if len(line.commands) != 1 else ''}"
        hosts = list(line.hosts.items())
        if not hosts:
            return text
        if len(hosts) > HOSTS_LISTED:
            done = sum(1 for _, h in hosts if h.state == "ok")
            text += f" — {done}/{len(hosts)} hosts done"
            hosts = [(t, h) for t, h in hosts if h.state in ("failed", "running")][:HOSTS_LISTED]
        for target, host in hosts:
            entry = f"\n        › `{escape(target)}` {STATE_EMOJI[host.state]}"
            if host.detail:
                # A transport's error starts with the host, already named on this line.
                entry += f" {escape(host.detail.removeprefix(f'{target}: '))}"
            if host.seconds is not None and host.seconds >= 0.05:
                entry += f" ({human_duration(host.seconds)})"
            text += entry
        return text

    # --- the thread --------------------------------------------------------------------

    def plan_messages(self) -> list[Message]:
        """A dry run's exact commands, step by step, in as few messages as fit."""
        lines = []
        for line in self.steps.values():
            if line.state != "planned":
                continue
            entry = f"*{line.title}*"
            if line.detail:
                entry += f" — _{escape(line.detail)}_"
            if line.commands:
                entry += "\n" + code_block("\n".join(line.commands))
            lines.append(entry)
        sections = sections_for_lines(lines)
        messages = []
        for start in range(0, len(sections), 40):
            chunk = sections[start : start + 40]
            messages.append(message(f"Dry run of {self.title}: the exact commands", chunk))
        return messages


def code_block(text: str, limit: int = SECTION_TEXT_MAX - 200) -> str:
    """Text as a code block that cannot end early or mention anyone."""
    body = escape(text.replace("```", "'''"))
    if len(body) > limit:
        body = "…" + body[-(limit - 1) :]
    return f"```{body}```"


def failure_detail(failure: StepFailed) -> Message:
    title = STEP_TITLES.get(failure.step, failure.step)
    where = f" on `{escape(failure.host)}`" if failure.host else ""
    text = f":x: *{title}* failed{where}: {escape(failure.error)}"
    blocks = [section(text)]
    if failure.output:
        blocks.append(section("Last lines of output:\n" + code_block(failure.output)))
    return message(f"{title} failed: {failure.error}", blocks)


# --- approvals --------------------------------------------------------------------------------

CHECK_EMOJI = {"passed": ":white_check_mark:", "failed": ":x:", "confirm": ":white_small_square:"}


def approval_request(
    approval: Approval,
    *,
    version: str,
    flags: Sequence[str],
    hosts: Sequence[str],
    checklist: Sequence[ChecklistItem],
    plan: Sequence[str],
    timeout_text: str,
    target: str = "",
) -> Message:
    """A deploy's request shows the Pre-Deployment Checklist; a rollback's (`target` says what
    it goes back to) shows its plan host by host."""
    env = approval.environment
    shown_hosts = ", ".join(f"`{escape(h)}`" for h in hosts[:10]) + (
        f" and {len(hosts) - 10} more" if len(hosts) > 10 else ""
    )
    if approval.kind == "rollback":
        to = show_version(version) if version else target
        what = f"roll back {env} to {to}"
        intro = (
            f"<@{approval.requested_by}> asks to roll back *{env}* to *{escape(target or to)}*."
            f"\nHosts: {shown_hosts}"
        )
        checklist_title = "*What each host runs, and what it goes back to*"
    else:
        what = f"{approval.kind} {show_version(version)} to {env}"
        options = " ".join(f"`{f}`" for f in flags) or "none"
        intro = (
            f"<@{approval.requested_by}> asks to {approval.kind} "
            f"*{escape(show_version(version))}* to *{env}*.\nOptions: {options} · hosts: "
            + shown_hosts
        )
        checklist_title = "*Pre-Deployment Checklist* (runbook)"
    blocks: list[Block] = [header(f"Approval needed: {what}"), section(intro)]
    if plan:
        blocks.append(section("*Plan:* " + escape(" → ".join(plan))))
    lines = [checklist_title]
    for item in checklist:
        entry = f"{CHECK_EMOJI[item.state]} {escape(item.label)}"
        if item.state == "confirm":
            entry += " — _for the approver to confirm by approving_"
            if item.detail:
                entry += f" ({escape(item.detail)})"
        elif item.detail:
            entry += f" — {escape(item.detail)}"
        lines.append(entry)
    blocks.extend(sections_for_lines(lines))
    blocks.append(approval_footer(approval, timeout_text))
    blocks.append(_decision(approval, timeout_text))
    return message(f"Approval needed: {what}, asked by <@{approval.requested_by}>", blocks)


def _decision(approval: Approval, timeout_text: str) -> Block:
    if approval.state == "pending":
        return {
            "type": "actions",
            "block_id": f"approval_{approval.id}",
            "elements": [
                button("Approve", APPROVE, str(approval.id), "primary"),
                button("Reject", REJECT, str(approval.id), "danger"),
            ],
        }
    at = when(approval.decided_at) if approval.decided_at else ""
    if approval.state == "approved":
        return section(f":white_check_mark: *Approved* by <@{approval.decided_by}> at {at}")
    if approval.state == "rejected":
        return section(f":no_entry: *Rejected* by <@{approval.decided_by}> at {at}")
    return section(f":hourglass: *Expired* at {at}: nobody decided within {timeout_text}")


def approval_footer(approval: Approval, timeout_text: str) -> Block:
    return context(
        f"request #{approval.id} · expires {when(approval.expires_at)} ({timeout_text}) · "
        "only an approver other than the requester can decide"
    )


def approval_asked(approval: Approval, channel: str | None, timeout_text: str) -> Message:
    where = f"<#{channel}>" if channel else "this channel"
    text = (
        f":hourglass_flowing_sand: Approval requested in {where} (request #{approval.id}); "
        f"it expires in {timeout_text}. The {approval.kind} starts when an approver approves."
    )
    return message(text, [section(text)])


def approval_told(approval: Approval, what: str) -> Message:
    state = approval.state
    by = f" by <@{approval.decided_by}>" if approval.decided_by else ""
    text = {
        "approved": f":white_check_mark: Your request #{approval.id} ({what}) was approved{by}: "
        "it starts now.",
        "rejected": f":no_entry: Your request #{approval.id} ({what}) was rejected{by}.",
        "expired": f":hourglass: Your request #{approval.id} ({what}) expired: no approver "
        "decided in time. Ask again with the same command.",
    }.get(state, f"Your request #{approval.id} is {state}.")
    return message(text, [section(text)])


def approval_refused(reason: str) -> Message:
    return message(reason, [section(f":no_entry: {reason}")])


# --- locks, status, history -------------------------------------------------------------------


def lock_holder(lock: EnvironmentLock) -> str:
    """'locked by @X since 12:00 UTC (deploy #12, its message)' in mrkdwn."""
    since = day_and_time(lock.acquired_at)
    if lock.kind == "manual":
        reason = f": {escape(lock.reason)}" if lock.reason else ""
        return f"held by hand by <@{lock.holder}> since {since}{reason}"
    what = f"{lock.kind} #{lock.deployment_id}" if lock.deployment_id else lock.kind
    where = (
        link(lock.permalink, "its message")
        if lock.permalink
        else (f"its message in <#{lock.channel}>" if lock.channel else "its message")
    )
    return f"locked by <@{lock.holder}>'s {what} since {since} ({where})"


def locked(env: str, lock: EnvironmentLock, asked: str) -> Message:
    text = f":lock: {env} is {lock_holder(lock)}, so your {asked} did not start."
    fallback = f"{env} is locked by {lock.holder} since {day_and_time(lock.acquired_at)}"
    return message(fallback, [section(text)])


def unlock_confirm(env: str, lock: EnvironmentLock) -> Message:
    text = (
        f":warning: {env} is {lock_holder(lock)}. Free it anyway? Everyone in this channel "
        "will be told, and so will the holder."
    )
    return message(
        f"{env} is held by {lock.holder}: free it anyway?",
        [
            section(text),
            {
                "type": "actions",
                "block_id": "unlock_confirm",
                "elements": [
                    button("Free it", UNLOCK_CONFIRM, f"{env}:{lock.token}", "danger"),
                ],
            },
        ],
    )


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
                f"{escape(STEP_TITLES.get(d.step, d.step).lower())}, since "
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
            emoji = {
                "success": ":white_check_mark:",
                "failure": ":x:",
                "cancelled": ":no_entry:",
            }.get(run.outcome, ":hourglass_flowing_sand:")
            age = f" · {day_and_time(run.created_at)}" if run.created_at else ""
            lines.append(
                f"{emoji} {link(run.url, escape(cut(run.title, 80)) or str(run.id))} — "
                f"{escape(run.outcome)} · `{escape(run.sha[:7])}`{age}"
            )
        blocks.extend(sections_for_lines(lines))
    summary = f"{len(running)} running, {len(locks)} locked"
    return message(f"Deploy status ({scope}): {summary}", blocks)


def _by(outcome: Outcome) -> str:
    return f" (cancelled by <@{outcome.cancelled_by}>)" if outcome.cancelled_by else ""


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


def interrupted(deployment: Deployment) -> Message:
    step = escape(STEP_TITLES.get(deployment.step, deployment.step))
    text = (
        f":warning: {deployment.kind.capitalize()} #{deployment.id} was interrupted: the bot "
        f"stopped (a restart or a crash) during *{step}*. The lock on "
        f"{deployment.environment} is released. The hosts may be part-way: check with "
        f"`/health {deployment.environment}` and `/deploy status {deployment.environment}`, and "
        f"use `/rollback {deployment.environment}` if needed."
    )
    return message(
        f"{deployment.kind} #{deployment.id} of {deployment.environment} was interrupted",
        [section(text)],
    )


def watch_started(env: str, duration: str, interval: str) -> Message:
    text = (
        f":eyes: Watching {env}'s health for {duration} after the deploy (a check every "
        f"{interval}); the result goes here."
    )
    return message(text, [section(text)])


def watch_failed(
    env: str, deployment_id: int, reason: str, *, final: bool, checks: int, failures: int
) -> Message:
    if final:
        text = (
            f":red_circle: {env} after the deploy: {failures} of {checks} health checks failed "
            f"(last: {escape(reason)})."
        )
    else:
        text = f":red_circle: {env} is unhealthy after the deploy: {escape(reason)}."
    return message(
        text,
        [
            section(text),
            {
                "type": "actions",
                "block_id": f"watch_{deployment_id}",
                "elements": [button("Roll back", ROLL_BACK, str(deployment_id), "danger")],
            },
        ],
    )


def watch_passed(env: str, checks: int, duration: str, version: str | None) -> Message:
    on = f" on {escape(show_version(version))}" if version else ""
    text = (
        f":white_check_mark: {env} stayed healthy{on} for {duration} after the deploy "
        f"({checks} check{'s' if checks != 1 else ''})."
    )
    return message(text, [section(text)])
