"""The Chat that commands and the change flows talk to: the same calls, through the outbox.

Handlers, reports and the deploy, rollback and approval flows post, update, DM and answer
privately through `services.chat`, as they always have; this is what makes those messages
durable without a change on their side. Each call is an outbox row (bot/slack/outbox.py) tried
at once, so with Slack answering nothing is slower than a direct call:

- `post` and `dm` return the message's reference once Slack took it — while Slack is away the
  caller waits (a /health report checks when its message can be shown, not before);
- `update` and `respond` return after the first try: what did not go waits in the outbox
  (a newer update of the same message replaces a waiting one);
- a refusal for good (not_in_channel, an unknown user) is a ChatError, as before.

A message sent while a command or a button press is being answered (`answering`) is a reply:
useful for REPLY_USEFUL_FOR, a private reply goes through the response_url while Slack takes
it and to the user's DM after, and one still waiting past its usefulness is dropped with a log
line naming the command (the waiting caller gets ChatError("expired")). Uploads, permalinks
and App Home views pass straight through.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from bot.slack.chat import Asked, ChatError, Message, MessageRef, Upload, answering
from bot.slack.delivery import Dropped, Outcome, Pending, Refused, Sent
from bot.slack.outbox import Outbox
from bot.slack.paced_chat import Priority
from bot.store import LANE_PAGE, LANE_REPLY, LANE_ROUTINE, NewDelivery
from bot.store.outbox import POST, RESPOND, UPDATE

REPLY_USEFUL_FOR = timedelta(hours=1)


class DurableChat:
    """The Chat protocol over an Outbox (see the module's docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        lane: int = LANE_REPLY,
        useful_for: timedelta = REPLY_USEFUL_FOR,
    ) -> None:
        self.outbox = outbox
        self.lane = lane  # LANE_REPLY keeps no pace but Slack's; the others Slack's per channel
        self.useful_for = useful_for

    async def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None
    ) -> MessageRef:
        where = f"in {channel}" + (" (thread)" if thread_ts else "")
        ref = await self._deliver(
            POST, message, where, wait=True, channel=channel, thread_ts=thread_ts
        )
        assert ref is not None
        return ref

    async def dm(self, user_id: str, message: Message) -> MessageRef:
        ref = await self._deliver(POST, message, f"to {user_id}", wait=True, user_id=user_id)
        assert ref is not None
        return ref

    async def update(self, ref: MessageRef, message: Message) -> None:
        await self._deliver(
            UPDATE, message, f"update in {ref.channel}", wait=False, channel=ref.channel, ts=ref.ts
        )

    async def respond(self, response_url: str, message: Message) -> None:
        asked = answering.get()
        await self._deliver(
            RESPOND,
            message,
            "private reply",
            wait=False,
            response_url=response_url,
            # Where it goes once the response_url no longer takes it.
            user_id=asked.user_id if asked is not None else None,
        )

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        return await self.outbox.sender.upload(channel, upload, thread_ts=thread_ts)

    async def permalink(self, ref: MessageRef) -> str | None:
        return await self.outbox.sender.permalink(ref)

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None:
        # A Home tab view is state, not a message: the App Home paces and re-publishes it.
        await self.outbox.sender.publish_home(user_id, blocks)

    async def _deliver(
        self,
        op: str,
        message: Message,
        what: str,
        *,
        wait: bool,
        channel: str | None = None,
        thread_ts: str | None = None,
        ts: str | None = None,
        user_id: str | None = None,
        response_url: str | None = None,
    ) -> MessageRef | None:
        asked = answering.get()
        new = NewDelivery(
            key=f"msg/{uuid.uuid4().hex}",
            kind="reply" if asked is not None else "message",
            lane=self.lane,
            op=op,
            channel=channel,
            user_id=user_id,
            response_url=response_url,
            thread_ts=thread_ts,
            ts=ts,
            text=message.text,
            blocks=message.blocks,
            about=_about(what, asked),
            expires_at=self.outbox.clock() + self.useful_for if asked is not None else None,
        )
        outcome = await self.outbox.send(new)
        if isinstance(outcome, Pending) and wait:
            if not outcome.recorded:  # no database: nothing to wait for
                raise ChatError(outcome.reason)
            outcome = await self.outbox.wait(new.key)
        return _result(outcome)


class PacedLanes:
    """`lane(priority)`: a DurableChat in the outbox's paced page or routine lane, for callers
    that post beside alerts and incidents (a rollback's summary in the alerts channel)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def lane(self, priority: Priority) -> DurableChat:
        lane = LANE_PAGE if priority == Priority.PAGE else LANE_ROUTINE
        return DurableChat(self.outbox, lane=lane)


def _about(what: str, asked: Asked | None) -> str:
    return f"{what}, answering {asked}" if asked is not None else what


def _result(outcome: Outcome) -> MessageRef | None:
    if isinstance(outcome, Sent):
        return outcome.ref
    if isinstance(outcome, Refused):
        raise outcome.error
    if isinstance(outcome, Dropped):
        raise ChatError("dropped")
    return None  # Pending: it waits in the outbox
