"""A short database lease on posting about one subject, renewed while the work runs.

Incidents and alerts are posted about by one replica at a time. The lease is short (15 s) so
that a replica killed while it held one delays nothing for long, and it is renewed every 5 s
while the work goes on. A holder that finds its lease taken when it renews (it stalled past
the lease and another replica took over) stops at once: the other one carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from bot.scheduler import RetryLater
from bot.store import StoreError

log = logging.getLogger(__name__)

POSTING_LEASE = timedelta(seconds=15)


class LeaseLost(RetryLater):
    """Another replica holds (or took over) the right to post about this subject."""


@contextlib.asynccontextmanager
async def posting_lease(
    what: str,
    take: Callable[[], Awaitable[bool]],
    release: Callable[[], Awaitable[None]],
    lease: timedelta = POSTING_LEASE,
) -> AsyncIterator[None]:
    """Hold the lease for the block; `take` takes or renews it, `release` gives it back.

    Raises LeaseLost (a RetryLater: the timer tries again in a second) if another replica
    holds it, or took it while the block ran (the block is cancelled then).
    """
    if not await take():
        raise LeaseLost(f"{what} is being posted by another bot")
    work = asyncio.current_task()
    assert work is not None
    lost = asyncio.Event()

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                kept = await take()
            except StoreError as exc:
                log.warning("could not renew the posting lease of %s: %s", what, exc)
                continue
            if not kept:
                lost.set()
                work.cancel()
                return

    renewing = asyncio.create_task(renew(), name=f"lease-{what}")
    try:
        yield
    except asyncio.CancelledError:
        if lost.is_set():
            work.uncancel()  # our own cancel, turned into "try again later"
            raise LeaseLost(f"{what}: another bot took over its posting") from None
        raise
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        if not lost.is_set():
            with contextlib.suppress(StoreError):
                await release()
