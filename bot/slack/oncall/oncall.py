"""On-call in Slack: /oncall's answers, overrides, and the hand-off messages.

Who is on call comes from bot/runbook/oncall (`OnCall.on_call`), the same answer paging uses;
the levels are the config's, as an incident opened now would freeze them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.incidents.escalation import EscalationPlan, Level
from bot.runbook.oncall.handoffs import Handoff, Handoffs
from bot.runbook.oncall.oncall import (
    MAX_OVERRIDE,
    SCHEDULE_SPAN,
    OnCall,
    local_time,
    shifts,
    turn_holder,
    zone_of,
)
from bot.scheduler import Scheduler
from bot.slack import delivery
from bot.slack.chat import Chat, Message
from bot.slack.durable_chat import DurableChat
from bot.slack.incidents.incident_blocks import mentions
from bot.slack.oncall import oncall_blocks
from bot.slack.oncall.oncall_blocks import Standing, level_title
from bot.slack.outbox import Outbox, outbox_of
from bot.store import LANE_ROUTINE, NewDelivery, Store, StoreError, Timer
from bot.store.oncall import OnCallStore

log = logging.getLogger(__name__)


class HandoffNotSent(Exception):
    """A hand-off message could not be posted now; the timer tries again."""


@dataclass(frozen=True)
class OverrideRequest:
    """A checked `/oncall override`: who takes which level until when."""

    number: int
    level: Level
    user_id: str
    ends_at: datetime | None  # None: the level's next hand-off
    zone_assumed: bool  # the time was typed without a zone and read in the level's


@dataclass(frozen=True)
class Refused:
    reason: str


class OnCallDesk:
    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat | Outbox,
        scheduler: Scheduler,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.outbox = outbox_of(chat, store, clock)
        self.chat = DurableChat(self.outbox, lane=LANE_ROUTINE)
        self.clock = clock
        overrides = OnCallStore(store)
        self.on_call = OnCall(overrides, clock=clock)
        self.handoffs = Handoffs(
            store, self.on_call, overrides, clock=clock, wake=scheduler.sweep_at
        )

    def levels(self) -> tuple[Level, ...]:
        return EscalationPlan.from_config(self.config.escalation, self.config.alerts).levels

    def find_level(self, text: str) -> tuple[int, Level] | str:
        """A level by number (1-based) or name (any case); a str says what is wrong."""
        levels = self.levels()
        wanted = text.strip()
        names = ", ".join(f"{n} {lv.name}" for n, lv in enumerate(levels, 1)) or "none"
        for number, level in enumerate(levels, 1):
            if wanted == str(number) or wanted.casefold() == level.name.casefold():
                return number, level
        return f"There is no escalation level {wanted!r}; the levels are: {names}."

    # --- /oncall, /oncall <level> -----------------------------------------------------------

    async def overview(self) -> Message:
        now = self.clock()
        in_effect = [o for o in await self.on_call.overrides_from(now) if o.starts_at <= now]
        return oncall_blocks.overview(await self.standings(now), in_effect, self.levels())

    async def standings(self, now: datetime) -> list[Standing]:
        """Each level: who is on call at `now`, until when, and the next hand-offs."""
        return [await self._standing(n, level, now) for n, level in enumerate(self.levels(), 1)]

    async def _standing(self, number: int, level: Level, now: datetime) -> Standing:
        people = await self.on_call.on_call(level, now)
        if level.rotation is None:
            return Standing(number, level, people, None, [])
        overrides = await self.on_call.overrides_from(now, level)
        current = shifts(level, now, now + SCHEDULE_SPAN, overrides)[0]
        turn = level.rotation.turn_at(now)
        coming = [level.rotation.handoff_at(turn + k) for k in (1, 2)]
        following = [(at, turn_holder(level, at, overrides) or "") for at in coming]
        return Standing(number, level, people, current, following)

    async def schedule(self, number: int, level: Level) -> Message:
        now = self.clock()
        people = await self.on_call.on_call(level, now)
        upcoming = await self.on_call.shifts(level, now, now + SCHEDULE_SPAN)
        return oncall_blocks.schedule(number, level, upcoming, people)

    # --- overrides --------------------------------------------------------------------------

    async def check_override(
        self,
        requester: str,
        user_id: str,
        *,
        level_number: int | None,
        length: timedelta | None,
        until: datetime | None,
        privileged: bool,
    ) -> OverrideRequest | Refused | str:
        """What `/oncall override` asks for, whether the requester may, or what is wrong."""
        found = self._override_level(level_number)
        if isinstance(found, str):
            return found
        number, level = found
        now = self.clock()
        if not privileged and not await self.on_call.may_override(level, requester, now):
            holders = await self.on_call.on_call(level, now)
            return Refused(
                f"Only whoever is on call for {level_title(number, level)} now "
                f"({mentions(holders)}), deployers and approvers may override it."
            )
        ends_at = now + length if length is not None else None
        if until is not None:
            ends_at = local_time(level, until)
        if ends_at is not None and ends_at <= now:
            return f"{oncall_blocks.when(ends_at, zone_of(level))} has passed."
        if ends_at is not None and ends_at - now > MAX_OVERRIDE:
            return f"An override lasts at most {MAX_OVERRIDE.days} days."
        assumed = until is not None and until.tzinfo is None
        return OverrideRequest(number, level, user_id, ends_at, assumed)

    def _override_level(self, number: int | None) -> tuple[int, Level] | str:
        levels = self.levels()
        rotating = [(n, lv) for n, lv in enumerate(levels, 1) if lv.rotation is not None]
        if not rotating:
            return (
                "No escalation level has a rotation (`escalation.levels[].rotation`) to override."
            )
        if number is None:
            return rotating[0]
        if not 1 <= number <= len(levels):
            return f"There is no level {number}; the levels are 1 to {len(levels)}."
        level = levels[number - 1]
        if level.rotation is None:
            return (
                f"Level {number}, {level.name}, has no rotation: its users are fixed in the "
                f"config. Levels with one: {', '.join(str(n) for n, _ in rotating)}."
            )
        return number, level

    async def override(self, wanted: OverrideRequest, requester: str) -> Message:
        """Make the override; tell the person it puts on call. Returns the answer."""
        now = self.clock()
        replaced = turn_holder(wanted.level, now, await self.on_call.overrides_from(now))
        made = await self.on_call.override(
            wanted.level, wanted.user_id, wanted.ends_at, by=requester
        )
        if wanted.user_id != requester:
            try:
                await self.chat.dm(
                    wanted.user_id, oncall_blocks.override_told(wanted.number, wanted.level, made)
                )
            except Exception as exc:  # the override stands; the answer says it is made
                log.warning("could not tell %s of their override: %s", wanted.user_id, exc)
        return oncall_blocks.override_made(
            wanted.number, wanted.level, made, replaced, wanted.zone_assumed
        )

    async def cancel(self, requester: str, whose: str | None) -> Message:
        ended = await self.on_call.cancel(requester, whose=whose)
        return oncall_blocks.cancelled(ended, self.levels())

    # --- hand-offs --------------------------------------------------------------------------

    async def plan_handoffs(self) -> None:
        """Periodic: every rotation level has a timer at its next hand-off."""
        try:
            await self.handoffs.plan(self.levels())
        except StoreError as exc:
            log.error("hand-off timers not set: %s — check EVENTMESH_DATABASE_URL", exc)

    async def on_handoff_timer(self, timer: Timer) -> None:
        handoff = await self.handoffs.fell_due(self.levels(), timer.payload)
        if handoff is None or not handoff.incoming:
            return
        sent = await self.handoffs.sent(handoff)
        failures: list[str] = []
        for user in handoff.incoming:
            if user not in sent:
                message = oncall_blocks.handoff_dm(handoff)
                await self._send(handoff, user, message, failures, user_id=user)
        channel = self.config.slack.incidents_channel
        if channel and channel not in sent:
            line = oncall_blocks.handoff_line(handoff)
            await self._send(handoff, channel, line, failures, channel=channel)
        if failures:
            raise HandoffNotSent("; ".join(failures))

    async def _send(
        self,
        handoff: Handoff,
        target: str,
        message: Message,
        failures: list[str],
        *,
        user_id: str | None = None,
        channel: str | None = None,
    ) -> None:
        """Hand the message to the outbox under a key of its own (this hand-off, this
        target): written once and delivered once, however often the timer tries it."""
        new = NewDelivery(
            key=f"handoff/{handoff.level.name}/{handoff.at.isoformat()}/{target}",
            kind="handoff",
            lane=LANE_ROUTINE,
            user_id=user_id,
            channel=channel,
            text=message.text,
            blocks=message.blocks,
            about=f"hand-off of {handoff.level.name} to {target}",
        )
        outcome = await self.outbox.send(new)
        if isinstance(outcome, delivery.Refused):
            log.error(
                "hand-off of %s: Slack refused the message to %s for good (%s) — check the "
                "user ids in the rotation and slack.incidents_channel",
                handoff.level.name,
                target,
                outcome.error.error,
            )
            await self.handoffs.record(handoff, target, outcome.error.error)
        elif isinstance(outcome, delivery.Sent):
            await self.handoffs.record(handoff, target)
        else:  # not yet: the timer tries again, and the key keeps it to one message
            failures.append(f"hand-off message to {target}: {outcome.reason}")
