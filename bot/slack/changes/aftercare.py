"""Aftercare: the health checks after a change — after a deploy the runbook's "monitor closely",
after a rollback its follow-up checks ("monitor for 10-15 minutes") — run one way for both.

One durable timer per change (AFTERCARE_TIMER, keyed by the change's id) carries its state in
a typed payload (`Aftercare`), so a restarted bot carries on. Each check is judged by the
runbook (bot/runbook/changes/aftercare.py: is it a failure, and why). The checks end when their
time is up, or at once when the change was rolled back or a newer one changed the environment.

What differs is each kind's `Policy`: how often and how long, and what is said where.
- After a deploy: a check every check_interval for watch_for; its thread hears of the first
  failure (with a Roll back button) and gets the last word.
- After a rollback: a set number of checks, one every followup_every for followup_for, each in
  the thread; a change to failing (and back) is an alert in slack.alerts_channel; the checks
  are a line of the rollback's checklist, and their result is added to its summary in the
  alerts channel; a restart in the middle says how many checks fell due while it was down; a
  newer change ends them with a line saying so.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Environment
from bot.process import THIS_PROCESS
from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.changes.aftercare import CheckVerdict, judge_check
from bot.runbook.health.health import HealthResult
from bot.slack.changes import aftercare_blocks, rollback_blocks
from bot.slack.changes.change_blocks import when
from bot.slack.changes.run import (
    finish_line,
    post_in_thread,
    record_line,
    show_as_recorded,
    where_shown,
)
from bot.slack.chat import ChatError, Message, MessageRef
from bot.slack.paced_chat import Priority
from bot.slack.services import Services
from bot.store import Deployment, StoreError, Timer

log = logging.getLogger(__name__)

AFTERCARE_TIMER = "change.aftercare"
# A check that falls due within this of the end still counts: it is the last one.
LAST_CHECK_GRACE = timedelta(seconds=1)


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


@dataclass
class Aftercare:
    """One change's aftercare, as its timer's payload keeps it between checks."""

    deployment: int
    kind: str  # the change's kind: whose Policy
    every: timedelta
    until: datetime
    due: datetime  # when the next check falls due
    owner: str  # the process that set the timer: another one is a restarted bot
    total: int | None = None  # a set number of checks; None: as many as fit until `until`
    step: int | None = None  # the checklist line it closes, if its kind shows one
    checks: int = 0
    failures: int = 0
    failing: bool = False
    missed: int = 0  # checks that fell due while no bot ran
    last_reason: str = ""  # why the last failing check failed
    summary: MessageRef | None = None  # a summary elsewhere to add the result to

    @property
    def number(self) -> int:
        """The last check's place among all planned: the ones run and the ones missed."""
        return self.checks + self.missed

    def as_payload(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "kind": self.kind,
            "every": self.every.total_seconds(),
            "until": self.until.isoformat(),
            "due": self.due.isoformat(),
            "owner": self.owner,
            "total": self.total,
            "step": self.step,
            "checks": self.checks,
            "failures": self.failures,
            "failing": self.failing,
            "missed": self.missed,
            "last_reason": self.last_reason,
            "summary": [self.summary.channel, self.summary.ts] if self.summary else None,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, object]) -> Aftercare:
        total, step, summary = data.get("total"), data.get("step"), data.get("summary")
        return cls(
            deployment=_int(data["deployment"]),
            kind=str(data["kind"]),
            every=timedelta(seconds=float(str(data["every"]))),
            until=datetime.fromisoformat(str(data["until"])),
            due=datetime.fromisoformat(str(data["due"])),
            owner=str(data.get("owner", "")),
            total=total if isinstance(total, int) else None,
            step=step if isinstance(step, int) else None,
            checks=_int(data.get("checks")),
            failures=_int(data.get("failures")),
            failing=bool(data.get("failing")),
            missed=_int(data.get("missed")),
            last_reason=str(data.get("last_reason", "")),
            summary=MessageRef(str(summary[0]), str(summary[1]))
            if isinstance(summary, list) and len(summary) == 2
            else None,
        )


@dataclass(frozen=True)
class Ending:
    text: str  # the result in words: the checklist line's, the summary's
    message: Message  # the thread's last line


@dataclass(frozen=True)
class Seen:
    """One check as it came out, for a policy to tell."""

    env: str
    deployment: Deployment
    care: Aftercare  # counted already: this check is care.checks (care.number of all planned)
    result: HealthResult
    verdict: CheckVerdict


class Policy(ABC):
    """How one kind of change is looked after: how often and how long, and what is said
    where. What a kind does not say returns None."""

    in_checklist = False  # a line of the change's checklist, shown again when the checks end

    @abstractmethod
    def schedule(self, env: Environment) -> tuple[timedelta, timedelta, int | None]:
        """How often, for how long, and how many checks (None: as many as fit)."""

    @abstractmethod
    def next_due(self, care: Aftercare, now: datetime) -> datetime:
        """When the check after the one just made falls due."""

    @abstractmethod
    def started(self, env: Environment, care: Aftercare, alerts: str | None) -> Message:
        """The thread's first line."""

    @abstractmethod
    def ended(self, env: Environment, deployment: Deployment, care: Aftercare) -> Ending:
        """The result, once the time is up."""

    def opening_line(self, care: Aftercare) -> str | None:
        return None

    def resumed(self, care: Aftercare, missed: int, now: datetime) -> Message | None:
        """A restarted bot carries on."""
        return None

    def checked(self, seen: Seen) -> Message | None:
        """In the thread, after each check."""
        return None

    def turned(self, seen: Seen) -> Message | None:
        """In the alerts channel, when a check starts failing or passes again."""
        return None

    def superseded(self, env: str, care: Aftercare, newer: Deployment) -> Ending | None:
        """A newer change of the environment ends the checks: with a word, or quietly."""
        return None

    def summary(self, deployment: Deployment, text: str) -> Message | None:
        """The change's summary elsewhere (care.summary), with the result added."""
        return None


class AfterDeploy(Policy):
    """The runbook's "monitor closely" after a deploy: quiet while healthy."""

    def schedule(self, env: Environment) -> tuple[timedelta, timedelta, int | None]:
        return env.check_interval, env.deploy.watch_duration(env.requires_approval), None

    def next_due(self, care: Aftercare, now: datetime) -> datetime:
        return now + care.every  # counted from the end of the last check

    def started(self, env: Environment, care: Aftercare, alerts: str | None) -> Message:
        watched = env.deploy.watch_duration(env.requires_approval)
        return aftercare_blocks.deploy_checks_started(
            env.name,
            human_duration(watched.total_seconds()),
            human_duration(care.every.total_seconds()),
        )

    def checked(self, seen: Seen) -> Message | None:
        care = seen.care
        if not seen.verdict.failed or care.failures != 1:
            return None  # the thread hears of the first failure only
        return aftercare_blocks.deploy_unhealthy(
            seen.env,
            seen.deployment.id,
            seen.verdict.reason,
            final=False,
            checks=care.checks,
            failures=care.failures,
        )

    def ended(self, env: Environment, deployment: Deployment, care: Aftercare) -> Ending:
        if care.failures:
            last = aftercare_blocks.deploy_unhealthy(
                env.name,
                deployment.id,
                care.last_reason,
                final=True,
                checks=care.checks,
                failures=care.failures,
            )
        else:
            watched = env.deploy.watch_duration(env.requires_approval)
            last = aftercare_blocks.deploy_stayed_healthy(
                env.name, care.checks, human_duration(watched.total_seconds()), deployment.version
            )
        return Ending(last.text, last)


class AfterRollback(Policy):
    """The Rollback Checklist's follow-up checks: every one told, failures raised as alerts."""

    in_checklist = True

    def schedule(self, env: Environment) -> tuple[timedelta, timedelta, int | None]:
        every = env.deploy.followup_every
        total = max(1, int(env.deploy.followup_for / every))
        return every, every * total, total

    def next_due(self, care: Aftercare, now: datetime) -> datetime:
        due = care.due + care.every  # on its schedule, unless that time has passed already
        return due if due > now else now + care.every

    def started(self, env: Environment, care: Aftercare, alerts: str | None) -> Message:
        return aftercare_blocks.followup_started(
            env.name, care.every, care.until, care.total or 1, alerts
        )

    def ended(self, env: Environment, deployment: Deployment, care: Aftercare) -> Ending:
        checks = f"{care.checks} check{'s' if care.checks != 1 else ''}"
        missed = f"; {care.missed} missed while the bot was down" if care.missed else ""
        if care.failures:
            text = (
                f"Follow-up checks done: {care.failures} of {checks} failed on {env.name} after "
                f"the rollback (last: {care.last_reason}{missed})."
            )
        else:
            on = f" on {show_version(deployment.version)}" if deployment.version else ""
            text = (
                f"Follow-up checks done: {env.name} stayed healthy{on} ({checks}, all "
                f"passed{missed})."
            )
        return self._ending(text, care)

    def opening_line(self, care: Aftercare) -> str | None:
        return (
            f"a check every {human_duration(care.every.total_seconds())} until "
            f"{when(care.until)} ({care.total} checks), each in the thread"
        )

    def resumed(self, care: Aftercare, missed: int, now: datetime) -> Message | None:
        return aftercare_blocks.followup_resumed(missed, care.due, now, care.until)

    def checked(self, seen: Seen) -> Message | None:
        care, verdict = seen.care, seen.verdict
        return aftercare_blocks.followup_check(
            care.number, care.total or 1, seen.result, verdict.failed, verdict.reason
        )

    def turned(self, seen: Seen) -> Message | None:
        care, verdict = seen.care, seen.verdict
        return aftercare_blocks.followup_turned(
            seen.env,
            seen.deployment,
            care.number,
            care.total or 1,
            verdict.reason if verdict.failed else None,
        )

    def superseded(self, env: str, care: Aftercare, newer: Deployment) -> Ending | None:
        return self._ending(
            f"Follow-up checks stopped after {care.checks} of {care.total}: "
            f"{newer.kind} #{newer.id} changed {env} since.",
            care,
        )

    def _ending(self, text: str, care: Aftercare) -> Ending:
        return Ending(text, aftercare_blocks.followup_done(text, care.failures > 0))

    def summary(self, deployment: Deployment, text: str) -> Message | None:
        return rollback_blocks.summary(deployment, followup=text)


POLICIES: dict[str, Policy] = {"deploy": AfterDeploy(), "rollback": AfterRollback()}


async def begin(
    services: Services,
    deployment: Deployment,
    env: Environment,
    *,
    summary: MessageRef | None = None,
) -> None:
    """Start looking after a change that succeeded: the first check is one interval away."""
    policy = POLICIES[deployment.kind]
    every, span, total = policy.schedule(env)
    now = services.store.clock()
    care = Aftercare(
        deployment.id,
        deployment.kind,
        every,
        now + span,
        now + every,
        THIS_PROCESS,
        total=total,
        summary=summary,
    )
    line = policy.opening_line(care)
    if line is not None:
        care.step = await record_line(services, deployment.id, "followup", "running", line)
    try:
        await services.scheduler.schedule(
            AFTERCARE_TIMER, str(deployment.id), care.due, care.as_payload()
        )
    except StoreError as exc:
        log.error("%s #%d: its checks were not scheduled: %s", care.kind, care.deployment, exc)
        if care.step is not None:
            text = "not scheduled: the bot's database failed"
            await finish_line(services, care.step, "failed", text)
        return
    alerts = services.config.slack.alerts_channel
    await post_in_thread(services, where_shown(deployment), policy.started(env, care, alerts))


async def stop(services: Services, deployment_id: int) -> None:
    """No more checks of that change (a rollback undoing it takes over)."""
    await services.scheduler.cancel(AFTERCARE_TIMER, str(deployment_id))


async def check(services: Services, timer: Timer) -> None:
    """One check: say it as the kind does, then schedule the next or end."""
    care = Aftercare.from_payload(timer.payload)
    policy = POLICIES[care.kind]
    store = services.store
    deployment = await asyncio.to_thread(store.deployment, care.deployment)
    if deployment is None or deployment.state != "succeeded":
        return  # rolled back (or gone) since: nothing left to look after
    env = services.config.environments.get(deployment.environment)
    if env is None:
        log.warning(
            "%s #%d: %s is gone from the config; its checks ended",
            deployment.kind,
            deployment.id,
            deployment.environment,
        )
        return
    newer = await _newer_change(services, deployment)
    if newer is not None:
        ending = policy.superseded(env.name, care, newer)
        if ending is not None:
            await _end(services, policy, deployment, care, ending)
        return
    ref = where_shown(deployment)
    if care.owner != THIS_PROCESS:  # set by a bot that stopped since: carry on, and say so
        now = store.clock()
        missed = max(0, int((now - care.due) / care.every))
        care.missed += missed
        care.owner = THIS_PROCESS
        await _say(services, ref, policy.resumed(care, missed, now))
    result = await services.health.check(env)
    verdict = judge_check(result, deployment.version)
    care.checks += 1
    if verdict.failed:
        care.failures += 1
        care.last_reason = verdict.reason
    seen = Seen(env.name, deployment, care, result, verdict)
    await _say(services, ref, policy.checked(seen))
    if verdict.failed != care.failing:
        care.failing = verdict.failed
        await _alert(services, policy.turned(seen))
    next_due = policy.next_due(care, store.clock())
    if next_due > care.until + LAST_CHECK_GRACE or (
        care.total is not None and care.number >= care.total
    ):
        await _end(services, policy, deployment, care, policy.ended(env, deployment, care))
        return
    care.due = next_due
    await services.scheduler.schedule(
        AFTERCARE_TIMER, str(deployment.id), next_due, care.as_payload()
    )


async def _newer_change(services: Services, deployment: Deployment) -> Deployment | None:
    """The first change of the environment after this one, if any (a backup changes nothing)."""
    recent = await asyncio.to_thread(services.store.deployments, deployment.environment, limit=20)
    newer = [d for d in recent if d.kind != "backup" and d.id > deployment.id]
    return newer[-1] if newer else None


async def _say(services: Services, ref: MessageRef | None, message: Message | None) -> None:
    if message is not None:
        await post_in_thread(services, ref, message)


async def _end(
    services: Services, policy: Policy, deployment: Deployment, care: Aftercare, ending: Ending
) -> None:
    await post_in_thread(services, where_shown(deployment), ending.message)
    if care.step is not None:
        await finish_line(services, care.step, "failed" if care.failures else "ok", ending.text)
    summary = policy.summary(deployment, ending.text)
    if care.summary is not None and summary is not None:
        try:
            await services.pacer.lane(Priority.ROUTINE).update(care.summary, summary)
        except ChatError as exc:
            log.warning("%s #%d: summary not updated: %s", care.kind, care.deployment, exc.error)
    if policy.in_checklist:
        await show_as_recorded(services, deployment.id)


async def _alert(services: Services, message: Message | None) -> None:
    """In the alerts channel, at Slack's pace (it is shared with the scheduled alerts)."""
    if message is None:
        return
    alerts = services.config.slack.alerts_channel
    if alerts is None:
        log.warning(
            "a change's alert had nowhere to go: set slack.alerts_channel (%s)", message.text
        )
        return
    try:
        await services.pacer.lane(Priority.ROUTINE).post(alerts, message)
    except ChatError as exc:
        log.error(
            "a change's alert not posted in %s (Slack said %s): %s", alerts, exc.error, message.text
        )
