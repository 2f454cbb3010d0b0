"""Block Kit for a change's message (a deploy's, a rollback's, a backup's): the checklist,
updated in place as the procedure's events arrive (`ChangeView.apply`), and its thread — a
failing step's output, a dry run's commands, an interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.deploy import ROLLBACK
from bot.runbook.changes.kinds import checklist_of, recorded_title, step_title
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
    escape,
    header,
    message,
    section,
    sections_for_lines,
)
from bot.slack.chat import Message
from bot.store import Deployment, DeploymentStep

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
HOSTS_LISTED = 6  # more hosts than this are summed up per step, failures still named
CANCEL = "deploy_cancel"


def when(at: datetime) -> str:
    return f"{at:%H:%M:%S} UTC"


def day_and_time(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def link(url: str | None, text: str) -> str:
    return f"<{url}|{text}>" if url else text


def cancelled_by(outcome: Outcome) -> str:
    return f" (cancelled by <@{outcome.cancelled_by}>)" if outcome.cancelled_by else ""


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


class ChangeView:
    """What a change's message shows, kept up to date from its events."""

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
        self.steps = {key: StepLine(key, title) for key, title in checklist_of(kind)}
        self.notes: list[str] = []
        self.outcome: Outcome | None = None
        self.failures: list[StepFailed] = []

    @classmethod
    def of_record(cls, deployment: Deployment) -> ChangeView:
        """A recorded change's checklist with no step done yet: its title, who, its steps."""
        return cls(
            kind=deployment.kind,
            environment=deployment.environment,
            version=deployment.version,
            requested_by=deployment.requested_by,
            approved_by=deployment.approved_by,
            flags=[
                f"--{key.replace('_', '-')}"
                for key in ("dry_run", "skip_tests", "no_backup")
                if deployment.options.get(key)
            ],
            deployment_id=deployment.id,
            started_at=deployment.started_at,
            title=recorded_title(
                deployment.kind, deployment.environment, deployment.hosts, deployment.version
            ),
        )

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

    def apply_recorded(self, steps: Sequence[DeploymentStep]) -> None:
        """Steps as the store recorded them (after a restart, or lines done after the run)."""
        for step in steps:
            took = (step.finished_at - step.started_at).total_seconds() if step.finished_at else 0.0
            if step.state == "skipped":
                self.apply(StepSkipped(step.step, step.detail))
            elif step.state == "running":
                self.apply(StepStarted(step.step, step.host, step.detail))
            elif step.state == "ok":
                self.apply(StepDone(step.step, step.host, took, step.detail))
            elif step.state == "failed":
                self.apply(StepFailed(step.step, step.host, took, step.detail, step.output))

    def _line(self, key: str) -> StepLine:
        if key not in self.steps:
            self.steps[key] = StepLine(key, step_title(key))
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
            result = f"{emoji} *{escape(self.outcome.summary)}*{cancelled_by(self.outcome)}"
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
            return self.outcome.summary + cancelled_by(self.outcome)
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
    title = step_title(failure.step)
    where = f" on `{escape(failure.host)}`" if failure.host else ""
    text = f":x: *{title}* failed{where}: {escape(failure.error)}"
    blocks = [section(text)]
    if failure.output:
        blocks.append(section("Last lines of output:\n" + code_block(failure.output)))
    return message(f"{title} failed: {failure.error}", blocks)


def interrupted(deployment: Deployment) -> Message:
    step = escape(step_title(deployment.step))
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
