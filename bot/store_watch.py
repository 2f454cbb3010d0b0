"""Whether the store answers, for /metrics and the log: readiness, not liveness.

One ERROR line when the store stops answering (PostgreSQL down or unreachable, the SQLite file
deleted under the running bot), one INFO line when it answers again, and
`eventmesh_bot_store_reachable` meanwhile; not a line per failed command. The commands that
need the store answer on their own that nothing was done (bot/slack/dispatch.py).

While the store answers, an answer to any of the bot's own statements in the last
WATCH_EVERY counts as a check (at 15 s check intervals the checking lease is renewed every
2.5 s): the watch asks with a query of its own only when nothing else did, so an idle bot
does not hand a `SELECT 1` to a thread every 5 s. A store that stops answering is therefore
noticed within 2 × WATCH_EVERY at worst (its last answer just before a check, the outage
right after); once it is unreachable, every check asks until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from bot.store import Store
from bot.telemetry import Telemetry

log = logging.getLogger(__name__)

WATCH_EVERY = timedelta(seconds=5)


class StoreWatch:
    def __init__(self, store: Store, telemetry: Telemetry, every: timedelta = WATCH_EVERY) -> None:
        self.store = store
        self.telemetry = telemetry
        self.every = every  # how often check() is called: an answer this recent is a check
        self.problem: str | None = None
        self._since = 0.0

    async def check(self) -> None:
        if self.problem is None and self.store.answered_within(self.every.total_seconds()):
            return  # it answered the bot within the interval: nothing new to ask or log
        problem = await asyncio.to_thread(self.store.problem)
        self.telemetry.store_reachable.set(0 if problem else 1)
        where = self.store.url.render_as_string(hide_password=True)
        if problem is not None and self.problem is None:
            self._since = time.monotonic()
            log.error(
                "the store is unreachable: %s — check EVENTMESH_DATABASE_URL (%s); commands "
                "that need it answer that nothing was done",
                problem,
                where,
            )
        elif problem is None and self.problem is not None:
            log.info(
                "the store answers again after %.0f s (%s)", time.monotonic() - self._since, where
            )
        self.problem = problem
