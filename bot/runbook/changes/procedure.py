"""What every change procedure (deploy, rollback, backup) does the same way.

- A procedure (`Procedure`: Deploy, Rollback, ManualBackup) yields its events and ends with
  Finished; one that honours Cancel (`HonoursCancel`: a deploy) is given a way to ask.
- The environment's hosts: `OpenHosts` opens them (the caller's wiring: SSH or the local
  machine), and `each_host` runs one step on every host, up to MAX_PARALLEL_HOSTS at once; a
  step that failed raises `StepError`.
- The lock is taken and freed by the caller (bot/store begin_deployment, finish_deployment);
  a procedure shows it as its first and last lines (`locked`, `unlocked`).
- The release log on a host: `write_log` writes one event (a failure is logged, not raised:
  the switch is what matters), `mark_bad` marks a release that failed so that no rollback
  lands on it again, and `remove_release` removes a release nobody switched to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

from bot.config import Environment
from bot.runbook.changes.activate import Clocked, one_line
from bot.runbook.changes.progress import (
    Event,
    StepDone,
    StepFailed,
    StepStarted,
    shown_output,
)
from bot.runbook.changes.releases import Layout, RemoteCommandFailed, log_event, run_checked
from bot.transport.base import ConnectFailed, HostKeyRejected, Transport, TransportError

log = logging.getLogger(__name__)

MAX_PARALLEL_HOSTS = 5  # sshd's MaxStartups refuses bursts

OpenHosts = Callable[[Environment], AbstractAsyncContextManager[list[Transport]]]
# Who asked to cancel (a user id), or None: asked between steps by a procedure that honours it.
CancelCheck = Callable[[], Awaitable[str | None]]


class Procedure(Protocol):
    """A change's procedure: its progress events, the last of them Finished."""

    def run(self) -> AsyncIterator[Event]: ...


@runtime_checkable
class HonoursCancel(Protocol):
    """A procedure that asks between its steps whether someone pressed Cancel; where it asks
    is its own (a deploy: before each step, never in the middle of the restarts)."""

    cancel_requested: CancelCheck | None

    def run(self) -> AsyncIterator[Event]: ...


class StepError(Exception):
    """A step failed; its StepFailed event has been (or is about to be) yielded."""

    def __init__(self, event: StepFailed, *, announced: bool = False) -> None:
        super().__init__(event.error)
        self.event = event
        self.announced = announced


def locked(environment: str, kind: str) -> StepDone:
    return StepDone("lock", detail=f"{environment} is locked for this {kind}")


def unlocked(environment: str) -> StepDone:
    return StepDone("unlock", detail=f"{environment} is free again")


async def each_host(
    step: str,
    hosts: Sequence[Transport],
    work: Callable[[Transport], Awaitable[str]],
    *,
    secrets: Iterable[str] = (),
    unreachable: list[str] | None = None,
) -> AsyncIterator[Event]:
    """Run work on every host, up to MAX_PARALLEL_HOSTS at once, yielding as they go.

    Every host is tried; if any failed, StepError carries the first failure (announced). A
    failing command's last lines are shown with `secrets` redacted; hosts that could not be
    logged into are added to `unreachable`.
    """
    queue: asyncio.Queue[Event] = asyncio.Queue()
    gate = asyncio.Semaphore(MAX_PARALLEL_HOSTS)
    failures: list[StepFailed] = []
    hidden = tuple(secrets)

    async def one(host: Transport) -> None:
        async with gate:
            clocked = Clocked()
            queue.put_nowait(StepStarted(step, host.target))
            try:
                detail = await work(host)
            except StepError as exc:
                failure = exc.event
            except (TransportError, RemoteCommandFailed) as exc:
                output = (
                    shown_output(exc.result, hidden) if isinstance(exc, RemoteCommandFailed) else ""
                )
                if unreachable is not None and isinstance(exc, ConnectFailed | HostKeyRejected):
                    unreachable.append(host.target)
                failure = StepFailed(step, host.target, clocked.seconds, one_line(exc), output)
            else:
                queue.put_nowait(StepDone(step, host.target, clocked.seconds, detail))
                return
            failures.append(failure)
            queue.put_nowait(failure)

    tasks = [asyncio.create_task(one(host)) for host in hosts]
    finished = asyncio.gather(*tasks)
    try:
        while not (finished.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, finished}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        await finished  # re-raises a bug in work (anything but the failures above)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise StepError(failures[0], announced=True)


async def write_log(host: Transport, layout: Layout, event: dict[str, object]) -> None:
    """A verdict in the host's release log; the switch is what matters, so a failure to write
    it is logged, not raised."""
    try:
        await run_checked(host, [layout.log_command(event)])
    except (TransportError, RemoteCommandFailed) as exc:
        log.error(
            "%s: release log not written (%s %s): %s",
            host.target,
            event["event"],
            event["release"],
            exc,
        )


async def mark_bad(
    hosts: Iterable[Transport], layout: Layout, release_id: str, at: datetime, reason: str
) -> None:
    """A release that failed (its health check, its start) is bad on these hosts."""
    event = log_event("bad", release_id, at, reason=reason)
    for host in hosts:
        await write_log(host, layout, event)


async def remove_release(host: Transport, layout: Layout, release_id: str) -> bool:
    """A release unpacked for a switch that never came is removed again; False if it stays."""
    try:
        await run_checked(host, [layout.remove_releases_command([release_id])])
    except (TransportError, RemoteCommandFailed) as exc:
        log.warning("could not remove unused %s on %s: %s", release_id, host.target, exc)
        return False
    return True
