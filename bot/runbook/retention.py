"""Retention: every hour, rows older than the config's `retention` are dropped — timers that
fired, the audit log, incident timelines and alert thread lines (bot/store/retention.py says
which exactly). The runbook keeps logs 90 days; so do these, by default."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.clock import Clock, utc_now
from bot.config import RetentionSettings
from bot.store import Store, StoreError

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(hours=1)


async def prune_old_rows(
    store: Store, retention: RetentionSettings, clock: Clock = utc_now
) -> dict[str, int]:
    """Prune each kind of row; returns how many went of each. A failing store is logged."""
    now = clock()
    kinds = (
        ("fired timers", store.prune_fired_timers, retention.timers),
        ("audit rows", store.prune_audit, retention.audit),
        ("incident and alert events", store.prune_events, retention.events),
    )
    pruned: dict[str, int] = {}
    for what, prune, keep in kinds:
        try:
            pruned[what] = await asyncio.to_thread(prune, now - keep)
        except StoreError as exc:
            log.error("%s not pruned: %s — check the database", what, exc)
            continue
        if pruned[what]:
            log.info("pruned %d %s older than %s", pruned[what], what, keep)
    return pruned
