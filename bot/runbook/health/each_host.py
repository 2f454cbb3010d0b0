"""Work on every host of an environment at once, a few at a time, results as they come.

Each host's connection is opened for its work and closed right after, so no more than
`at_once` are ever open (sshd's MaxStartups drops bursts of logins: FIELD-NOTES).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from bot.config import Environment, SshSettings
from bot.transport import Transport, transports_for

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_AT_ONCE = 5


def targets(env: Environment) -> list[str]:
    """How reports name the environment's hosts, in config order."""
    return ["local"] if env.transport == "local" else [str(host) for host in env.hosts]


async def on_each_host(
    env: Environment,
    ssh: SshSettings,
    work: Callable[[Transport], Awaitable[T]],
    *,
    at_once: int = MAX_AT_ONCE,
) -> AsyncIterator[tuple[int, T]]:
    """(position in env.hosts, what `work` returned for it), as each host finishes.

    `work` must turn a host's failure into its result: an exception ends the iteration.
    """
    transports = transports_for(env, ssh)
    gate = asyncio.Semaphore(at_once)

    async def one(index: int, transport: Transport) -> tuple[int, T]:
        async with gate:
            try:
                return index, await work(transport)
            finally:
                await _close(transport)

    tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(transports)]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Hosts never started (the caller stopped early) still hold their thread pools.
        await asyncio.gather(*(_close(t) for t in transports))


async def _close(transport: Transport) -> None:
    try:
        await transport.close()
    except Exception as exc:  # a failed close must not hide the results
        log.warning("closing %s failed: %s", transport.target, exc)
