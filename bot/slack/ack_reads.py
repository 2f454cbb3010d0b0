"""Store reads an ack waits on, on threads of their own.

Before a command is acked the bot reads the store (the user's rate, an override that makes
someone a responder). With asyncio.to_thread those reads queue in the loop's default executor
(6 threads on 2 cores) behind whatever the background work does there — during an alert storm,
alert states, incidents and deliveries, each of which may wait for SQLite's write lock — and
the ack waits seconds (ack_latency --under-load: Bolt's 3 s ran out). Here they never queue
behind anything but each other; SQLite in WAL mode and PostgreSQL let them read beside a writer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ack-reads")


async def read_for_ack(read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking store read off the loop, on the ack path's own threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_readers, functools.partial(read, *args, **kwargs))
