"""The one "setup" message in the alerts channel: what to fix in the config or on this machine.

Setup problems (bot/runbook/setup/problems.py) are not alerts: nobody is paged, no alert
fires. They are one message, posted when the first is found and edited in place as they
change, down to "nothing left to fix". The message is a keyed outbox row (SETUP_KEY): a
restart or a second replica finds it and edits it rather than posting another; while Slack is
away the latest content waits there. Updates carry their content's digest in their key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.setup.checks import Problem
from bot.runbook.setup.problems import SetupProblems
from bot.slack import blocks
from bot.slack.chat import Message
from bot.slack.outbox import Outbox
from bot.store import NewDelivery, Store, StoreError
from bot.store.outbox import UPDATE, WAITING

log = logging.getLogger(__name__)

SETUP_KEY = "setup/message"
KIND = "setup"
MAX_SECTIONS = 10
FALLBACK_MAX = 3000  # the notification's text; the blocks carry the whole list


def setup_message(problems: list[Problem]) -> Message:
    if not problems:
        text = ":white_check_mark: Setup: nothing left to fix."
        return Message(text, [blocks.section(text)])
    count = f"{len(problems)} setup problem{'s' if len(problems) != 1 else ''}"
    text = f":wrench: {count} to fix in the config or on the bot's machine"
    lines = [f"• `{problem.key}`: {problem.text}" for problem in problems]
    return Message(
        f"{text}: {'; '.join(str(p) for p in problems)}"[:FALLBACK_MAX],
        [
            blocks.section(f"*{text}*"),
            *blocks.sections_within(lines, MAX_SECTIONS, lambda n: f"…and {n} more"),
            blocks.context(
                "Not alerts: nobody is paged for these. This message is edited as they are "
                "fixed; `eventmesh-bot check-config --live` checks them all at once."
            ),
        ],
    )


class SetupNotice:
    def __init__(
        self,
        config: Config,
        store: Store,
        outbox: Outbox,
        problems: SetupProblems,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.problems = problems
        self.clock = clock
        self._shown: list[Problem] | None = None
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        problems.on_change(self._changed)

    def _changed(self) -> None:
        """A change: shown soon; changes meanwhile are shown together (the latest wins)."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._show_latest())

    def refresh(self) -> None:
        """Show what is known now even if nothing changed since start: a restarted bot edits
        a message an earlier run left (problems fixed meanwhile: "nothing left to fix")."""
        self._changed()

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _show_latest(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self.show(self.problems.current())
            except StoreError as exc:
                log.error("the setup message is not up to date: %s", exc)

    async def show(self, problems: list[Problem]) -> None:
        """Post the message, or edit the one posted, to show `problems`."""
        channel = self.config.slack.alerts_channel
        if channel is None or problems == self._shown:
            return
        message = setup_message(problems)
        first = await asyncio.to_thread(self.store.delivery, SETUP_KEY)
        if first is None or (first.state == WAITING and first.sent_ts is None):
            if first is None and not problems:
                self._shown = problems
                return  # nothing was ever wrong: nothing to say
            # Not posted yet: the waiting row takes the latest content.
            await self.outbox.send(self._new(SETUP_KEY, message, channel=channel))
        elif first.sent_ts is not None and first.sent_channel is not None:
            digest = hashlib.sha256(message.text.encode()).hexdigest()[:16]
            key = f"setup/update/{self.clock().timestamp():.0f}/{digest}"
            await self.outbox.send(
                self._new(key, message, op=UPDATE, channel=first.sent_channel, ts=first.sent_ts)
            )
        else:
            log.warning("the setup message was not posted (%s)", first.last_error or first.state)
        self._shown = problems

    def _new(self, key: str, message: Message, **where: str) -> NewDelivery:
        return NewDelivery(
            key=key,
            kind=KIND,
            text=message.text,
            blocks=message.blocks,
            subject="setup",
            about="the setup problems message",
            **where,  # type: ignore[arg-type]
        )
