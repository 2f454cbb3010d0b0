"""Progress of a procedure made of steps (a deploy, a rollback), as events anyone can render.

A procedure yields these; bot/slack renders them as a checklist in one message, and
`StepRecorder` keeps them in the store (deployment_steps), so /deploy history and a restarted
bot know what happened. Output shown to people has secrets redacted here, at the source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.redaction import REDACTED as REDACTED  # re-exported: the procedures import it here
from bot.redaction import redact
from bot.store import Store, StoreError
from bot.transport.base import CommandResult

log = logging.getLogger(__name__)

OUTPUT_LINES = 15  # the last lines of a failing command shown in the thread


def tail(text: str, lines: int = OUTPUT_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def shown_output(result: CommandResult, secrets: Iterable[str] = ()) -> str:
    """The last lines of a command's output, as they may be shown (secrets redacted).

    Redacted before it is cut, so a private key whose first lines fall outside the tail is
    still recognised as one."""
    return tail(redact(result.tail(200), secrets))


@dataclass(frozen=True)
class StepStarted:
    step: str
    host: str = ""
    detail: str = ""


@dataclass(frozen=True)
class StepDone:
    step: str
    host: str = ""
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class StepSkipped:
    step: str
    reason: str


@dataclass(frozen=True)
class StepFailed:
    step: str
    host: str
    seconds: float
    error: str  # one line: what went wrong and, where known, what to do
    output: str = ""  # the last lines of the failing command's output, redacted


@dataclass(frozen=True)
class StepPlanned:
    """A dry run's step: the exact commands, each as 'host: command'."""

    step: str
    commands: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class Note:
    """Something the people following should read, outside any one step."""

    text: str


@dataclass(frozen=True)
class VersionKnown:
    version: str


@dataclass(frozen=True)
class HostsChanged:
    """Per host: the release before, the new one, whether it was switched, its backup."""

    hosts: dict[str, dict[str, object]]


@dataclass(frozen=True)
class Outcome:
    state: str  # succeeded | failed | rolled_back | rollback_failed | cancelled | planned
    summary: str  # one line, for the message, the audit and history
    version: str | None = None
    failed_step: str | None = None
    failed_host: str | None = None
    error: str | None = None
    output: str = ""
    seconds: float = 0.0
    hosts: dict[str, dict[str, object]] = field(default_factory=dict)
    cancelled_by: str | None = None  # a user id; the chat layer decides how to name people

    @property
    def ok(self) -> bool:
        return self.state in ("succeeded", "planned")

    @classmethod
    def of(
        cls,
        state: str,
        summary: str,
        failure: StepFailed | None = None,
        *,
        version: str | None = None,
        seconds: float = 0.0,
        hosts: dict[str, dict[str, object]] | None = None,
    ) -> Outcome:
        """An outcome, with the failing step's where, what and output when there is one."""
        return cls(
            state=state,
            summary=summary,
            version=version,
            failed_step=failure.step if failure else None,
            failed_host=(failure.host or None) if failure else None,
            error=failure.error if failure else None,
            output=failure.output if failure else "",
            seconds=seconds,
            hosts=hosts or {},
        )


@dataclass(frozen=True)
class Finished:
    outcome: Outcome


Event = (
    StepStarted
    | StepDone
    | StepSkipped
    | StepFailed
    | StepPlanned
    | Note
    | VersionKnown
    | HostsChanged
    | Finished
)


class StepRecorder:
    """Keeps a deployment's events in the store; a failing database never stops the deploy."""

    def __init__(self, store: Store, deployment_id: int) -> None:
        self.store = store
        self.deployment_id = deployment_id
        self._open: dict[tuple[str, str], int] = {}

    async def record(self, event: Event) -> None:
        try:
            await asyncio.to_thread(self._record, event)
        except StoreError as exc:
            log.error(
                "deployment #%d: step not recorded (%s) — check the database",
                self.deployment_id,
                exc,
            )

    def _record(self, event: Event) -> None:
        store, deployment = self.store, self.deployment_id
        if isinstance(event, StepStarted):
            self._open[(event.step, event.host)] = store.record_step(
                deployment, event.step, event.host, "running", event.detail
            )
            store.update_deployment(deployment, step=event.step)
        elif isinstance(event, StepDone | StepFailed):
            state = "ok" if isinstance(event, StepDone) else "failed"
            detail = event.detail if isinstance(event, StepDone) else event.error
            output = event.output if isinstance(event, StepFailed) else ""
            step_id = self._open.pop((event.step, event.host), None)
            if step_id is None:
                step_id = store.record_step(deployment, event.step, event.host, state)
            store.finish_step(step_id, state, detail, output)
        elif isinstance(event, StepSkipped):
            step_id = store.record_step(deployment, event.step, "", "skipped", event.reason)
            store.finish_step(step_id, "skipped", event.reason)
        elif isinstance(event, VersionKnown):
            store.update_deployment(deployment, version=event.version)
        elif isinstance(event, HostsChanged):
            store.update_deployment(deployment, hosts=event.hosts)
