"""The App Home in Slack: a viewer's Home is published when they open it, and again when
what it shows changes.

What it shows changes in many flows (a lock, an incident, an alert, an approval, a health
class, an override); none of them calls this module. The store tells it instead
(bot/store/commits.py): after any commit here that wrote those tables, `_written` hands over
to the event loop. Writes within SETTLE_S of each other are one change; the next refresh
round then counts it for every recent viewer (one UPDATE) and publishes the Homes that are
due. A viewer's Home is due again `refresh_interval` after its last publish (5 s; more when
there are so many viewers that Slack's views.publish limit, Tier 4, would be exceeded), so a
burst of changes makes one publish at its start and one after it, with everything. A Home
that comes out as already published is not sent again.

Several replicas on one database: the replica that made the change refreshes; the viewers,
their unseen changes and their last publish are rows in the store, and each publish is
claimed with a conditional UPDATE, so whichever replica's round comes first publishes, once
per interval. A replica that dies between counting a change and publishing it leaves the
rows counted: every replica's sweep (SWEEP_EVERY) publishes them. A hand-off, or an override
running out, changes who is on call without a write: the sweep after it counts it.

The console has no Home tab: its `/home` prints the view once (`show`), and nobody is kept
up to date there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.home.home import RECENT, HomeState, Overview, refresh_interval
from bot.slack.blocks import Block
from bot.slack.chat import Chat, ChatError
from bot.slack.home.home_blocks import digest, home_view
from bot.slack.oncall.oncall import OnCallDesk
from bot.slack.oncall.oncall_blocks import Standing
from bot.store import (
    AlertRecord,
    ApprovalRecord,
    EnvironmentLockRecord,
    HealthStreakRecord,
    IncidentRecord,
    Store,
    StoreError,
)
from bot.store.commits import watch_commits
from bot.store.home import HomeStore, HomeViewer
from bot.store.oncall import OverrideRecord

log = logging.getLogger(__name__)

# What the Home shows: a commit that wrote any of these may change someone's Home.
SHOWN_TABLES = frozenset(
    str(record.__tablename__)
    for record in (
        IncidentRecord,
        EnvironmentLockRecord,
        AlertRecord,
        ApprovalRecord,
        HealthStreakRecord,
        OverrideRecord,
    )
)
SETTLE_S = 0.5  # writes closer together than this are one change
SWEEP_EVERY = timedelta(seconds=30)
FORGET_EVERY = timedelta(hours=1)
PUBLISHING_AT_ONCE = 4
# Slack's answers that another try will not change: logged, and not tried until the next change.
PERMANENT_ERRORS = frozenset(
    {"not_enabled", "user_not_found", "invalid_arguments", "view_too_large", "invalid_blocks"}
)


class HomeDesk:
    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat,
        oncall: OnCallDesk,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.chat = chat
        self.oncall = oncall
        self.clock = clock
        self.viewers = HomeStore(store)
        self.overview = Overview(
            list(config.environments), store, self.viewers, oncall.on_call, clock=clock
        )
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop (a test): the first refresh or open sets it
            self._loop = None
        self._unmarked = False  # shown tables were written since the last round counted it
        self._timer: asyncio.TimerHandle | None = None
        self._round: asyncio.Task[None] | None = None
        self._again = False
        self._forgotten_at: datetime | None = None
        self._turn_ends: datetime | None = None  # the next hand-off or override end shown
        self._unwatch = watch_commits(store.engine, SHOWN_TABLES, self._written)

    # --- a viewer's Home --------------------------------------------------------------------

    async def opened(self, user_id: str, *, showing: bool) -> str:
        """The viewer opened the Home tab: publish it now, unless what Slack shows them
        (`showing`: the event carried a view) is what it would publish. Returns the audit line.
        """
        self._loop = asyncio.get_running_loop()
        now = self.clock()
        before = await asyncio.to_thread(self.viewers.opened, user_id, now)
        blocks = await self._draw(user_id)
        drawn = digest(blocks)
        if showing and before.view_digest == drawn:
            return "Home shown is current"
        try:
            await self.chat.publish_home(user_id, blocks)
        except ChatError as exc:
            _log_refusal(user_id, exc)
            return f"Home not published: {exc.error}"
        await asyncio.to_thread(self.viewers.published, before, drawn, now)
        return f"Home published ({len(blocks)} blocks)"

    async def show(self, user_id: str) -> None:
        """Publish the viewer's Home once, without keeping it up to date (the console)."""
        await self.chat.publish_home(user_id, await self._draw(user_id))

    async def _draw(self, user_id: str) -> list[Block]:
        state, standings = await self._read()
        return home_view(state, standings, user_id, self.config.access)

    async def _read(self) -> tuple[HomeState, list[Standing]]:
        state = await self.overview.read()
        standings = await self.oncall.standings(state.at)
        # A turn ends (a hand-off, an override running out) with no write: the sweep after it
        # counts it as a change.
        ends = [s.shift.ends_at for s in standings if s.shift and s.shift.ends_at]
        self._turn_ends = min(ends, default=None)
        return state, standings

    # --- keeping Homes up to date -----------------------------------------------------------

    def _written(self, tables: frozenset[str]) -> None:
        """A commit wrote what the Home shows. Called in the committing thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the bot stops
            loop.call_soon_threadsafe(self._changed)

    def _changed(self) -> None:
        self._unmarked = True
        self._refresh_in(SETTLE_S)

    def _refresh_in(self, delay_s: float) -> None:
        """Run a refresh round in `delay_s` (or sooner, if one is set for sooner)."""
        if self._round is not None:
            self._again = True  # one more round after the one under way
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay_s:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay_s, self._start_round)

    def _start_round(self) -> None:
        self._timer = None
        self._round = asyncio.create_task(self._run_round(), name="home-refresh")

    async def _run_round(self) -> None:
        wait_s: float | None = None
        try:
            wait_s = await self.refresh()
        except StoreError as exc:
            # The store watch already says at ERROR what to fix; a traceback adds nothing.
            log.warning(
                "App Home not refreshed, the store is unreachable (%s); the next change "
                "or sweep tries again",
                exc,
            )
        except Exception:
            log.exception("App Home refresh failed; the next change or sweep tries again")
        finally:
            self._round = None
            if self._again:
                self._again = False
                self._refresh_in(SETTLE_S)
            elif wait_s is not None:
                self._refresh_in(wait_s)

    async def refresh(self) -> float | None:
        """One round: count the changes written since the last round for every recent viewer,
        and publish the Homes that wait for a change and are due. Returns the seconds until
        the next waiting Home falls due (None: none waits)."""
        self._loop = asyncio.get_running_loop()
        now = self.clock()
        since = now - RECENT
        count = await asyncio.to_thread(self.viewers.viewer_count, since)
        if self._unmarked:
            self._unmarked = False
            if count:
                try:
                    await asyncio.to_thread(self.viewers.mark_changed, since)
                except Exception:
                    self._unmarked = True
                    raise
        if not count:
            return None
        waiting = await asyncio.to_thread(self.viewers.waiting, since)
        interval = refresh_interval(count)
        due = [v for v in waiting if v.published_at is None or v.published_at + interval <= now]
        if due:
            await self._publish(due, now, interval)
        later = [v.published_at for v in waiting if v.published_at and v not in due]
        return (min(later) + interval - now).total_seconds() if later else None

    async def _publish(self, due: Sequence[HomeViewer], now: datetime, interval: timedelta) -> None:
        state, standings = await self._read()
        unchanged: list[HomeViewer] = []
        sending = asyncio.Semaphore(PUBLISHING_AT_ONCE)

        async def one(viewer: HomeViewer) -> None:
            blocks = home_view(state, standings, viewer.user_id, self.config.access)
            drawn = digest(blocks)
            if drawn == viewer.view_digest:
                unchanged.append(viewer)
                return
            claimed = await asyncio.to_thread(
                self.viewers.claim_publish, viewer, drawn, now, interval
            )
            if not claimed:
                return  # another replica published it within the interval
            async with sending:
                try:
                    await self.chat.publish_home(viewer.user_id, blocks)
                except ChatError as exc:
                    _log_refusal(viewer.user_id, exc)
                    if exc.error not in PERMANENT_ERRORS:
                        await asyncio.to_thread(self.viewers.not_published, viewer.user_id)

        await asyncio.gather(*(one(viewer) for viewer in due))
        if unchanged:
            await asyncio.to_thread(self.viewers.unchanged, unchanged)

    async def sweep(self) -> None:
        """Periodic, on every replica: publish what a dead replica counted and left, count a
        turn on call that ended since the Home was drawn, and forget viewers whose last open
        is past RECENT (hourly)."""
        self._loop = asyncio.get_running_loop()
        now = self.clock()
        if self._turn_ends is not None and self._turn_ends <= now:
            self._turn_ends = None
            self._unmarked = True
        if self._forgotten_at is None or now - self._forgotten_at >= FORGET_EVERY:
            self._forgotten_at = now
            await asyncio.to_thread(self.viewers.forget_before, now - RECENT)
        self._refresh_in(0)

    async def close(self) -> None:
        """Stop hearing commits; let a round under way finish."""
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._round is not None:
            await asyncio.wait({self._round}, timeout=5)


def _log_refusal(user_id: str, exc: ChatError) -> None:
    if exc.error == "not_enabled":
        log.error(
            "Slack refused the App Home of %s: the app's Home tab is off — turn it on "
            "(manifest features.app_home.home_tab_enabled, or App Home in the app's settings)",
            user_id,
        )
    else:
        log.warning("Slack refused the App Home of %s: %s", user_id, exc.error)
