"""Delivery from the outbox: every message to Slack is a row first, then a message.

Writers put a row in the outbox (bot/store/outbox.py) — a page in the same transaction as the
escalation step that needs it, a card or a reply just before it goes — and either try it at
once (`send`) or leave it. One delivery worker per process (`start`) sends whatever waits,
through the paced chat (bot/slack/paced_chat.py: Slack's pace per conversation, pages first),
until Slack takes it:

- **Exactly once.** Each row's key travels with its message (metadata `eventmesh_message`).
  A try whose answer was lost (the connection dropped, no answer in time, a 5xx) leaves the
  row *in doubt*; before it is sent again the conversation's recent history is searched for
  the key, and a message found there is the row's. The Web API client makes no retries of
  its own, so nothing is sent twice behind the outbox's back.
- **Files too.** An upload row (a post-mortem draft) carries the file's bytes as its text
  and its name in its payload; a file has no metadata, so one whose answer was lost is
  looked for in its thread by that name (unique per row) before it is shared again.
- **Nothing dropped, in order.** A row that failed waits (Retry-After when Slack gave one,
  else 1, 2, 4, 5 s…) and the rows behind it in the same conversation wait with it. Pages go
  in the order they fell due, each person's before the next level's. A row Slack refuses for
  good (an unknown user, an archived channel) is recorded as refused and the writer told.
- **Slack away.** The first failure that says Slack is unreachable (refused or dropped
  connections, 5xx, rate limits) is one WARNING line; while it lasts one row at a time probes
  (every 5 s at most) and the rest wait; the first answer is one line ("reachable again after
  62 s, 14 messages waiting") and everything goes, pages first. A message that goes out more
  than LATE_AFTER past when it was due says so, and why ("due 14:02:05 UTC, delayed by a
  Slack outage (HTTP 503)").
- **Replies** to commands (rows written while `answering` is set) are useful for
  REPLY_USEFUL_FOR: a reply through a response_url that no longer works (30 minutes, 5 uses)
  goes to the user's DM instead; past its usefulness it is dropped with a log line naming the
  command.

Rows are claimed (a 15 s lease, renewed while a send runs) so several replicas share one outbox;
a row whose claimer died is in doubt for the next one. Finished rows are kept a week.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.acks_first import ACKS_FIRST
from bot.clock import Clock, next_beat, utc_now
from bot.process import THIS_PROCESS
from bot.slack.chat import ChatError, Message, MessageRef, Upload
from bot.slack.delivery import (
    SPENT_RESPONSE_URL,
    Dropped,
    Hook,
    Outcome,
    Pending,
    Refused,
    Renderer,
    Sender,
    Sent,
    permanent,
)
from bot.slack.delivery_notes import late_note
from bot.slack.paced_chat import UPDATES, PacedChat, Priority
from bot.slack.slack_health import SlackHealth, backoff_s
from bot.store import LANE_PAGE, LANE_REPLY, Delivery, NewDelivery, Store, StoreError
from bot.store.outbox import (
    DROPPED,
    EXPIRED,
    POST,
    REFUSED,
    RESPOND,
    SENT,
    UPDATE,
    UPLOAD,
    WAITING,
)
from bot.telemetry import Telemetry

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=15)
RESPONSE_URL_VALID_FOR = timedelta(minutes=30)  # Slack's: then it answers expired_url
NOT_READY = timedelta(seconds=1)  # a thread line whose first message is not posted yet
KEEP_FINISHED = timedelta(days=7)
IDLE_ROUND_S = 1.0  # between rounds while something waits
QUIET_ROUND_S = 5.0  # and when nothing did (a writer's Pending wakes the worker at once)
ROUND_LIMIT = 500


class _NotYet(Exception):
    """A row that cannot go yet (its thread's first message is not posted), or never will."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


_owners = itertools.count(1)


class Outbox:
    """The one way messages reach Slack (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
        paced: bool = True,
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.telemetry = telemetry
        # Each outbox holds rows under its own name (two in one process never share a claim).
        self.owner = f"{THIS_PROCESS}/{next(_owners)}"
        self.health = SlackHealth(clock)
        # Pages and alerts keep Slack's pace; replies to commands only Slack's Retry-After.
        self.pacer = PacedChat(sender) if paced else _unpaced(sender)  # type: ignore[arg-type]
        self.replies = _unpaced(sender)  # type: ignore[arg-type]
        self._renderers: dict[str, Renderer] = {}
        self._hooks: list[tuple[str, Hook]] = []
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}  # by key: a try under way
        self._held: dict[str, int] = {}  # the rows those tries hold (claims to renew)
        self._holding = asyncio.Event()  # set while _held has rows: the renewal runs then
        self._finished: dict[str, asyncio.Event] = {}  # keys someone `wait`s for
        self._groups: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._store_down = False
        self.waiting = 0  # rows waiting at the last round (for the "reachable again" line)

    # --- set-up -----------------------------------------------------------------------------

    def render(self, kind: str, renderer: Renderer) -> None:
        """Build the message of rows of `kind` written without one (pages), when they go;
        the renderer's None means the row is no longer wanted (the incident was answered)."""
        self._renderers[kind] = renderer

    def on_delivered(self, subject_prefix: str, hook: Hook) -> None:
        """Call hook when the worker (not a writer's own try) delivered a row whose subject
        starts with the prefix: the writer records what it now knows (a card's ts)."""
        self._hooks.append((subject_prefix, hook))

    def start(self) -> None:
        """Start the delivery worker and the claim renewal (once, on the running loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name="outbox"),
                asyncio.create_task(self._renew_claims(), name="outbox-claims"),
            ]

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def close(self) -> None:
        """Stop sending; what still waits stays in the outbox for the next start."""
        tasks = [*self._tasks, *self._groups.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._groups = [], {}
        await self.pacer.close()
        await self.replies.close()

    # --- writing and trying ---------------------------------------------------------------

    async def send(self, new: NewDelivery, *, attempt: bool = True) -> Outcome:
        """Write the delivery (once: by its key) and, with `attempt`, try it now.

        Returns how it stands: Sent (now or before), Refused, Dropped, or Pending (it waits in
        the outbox; the worker sends it). Without a database it is tried once, unrecorded.
        """
        running = self._in_flight.get(new.key)
        if running is not None:
            return await asyncio.shield(running)
        may = attempt and self.health.may_try()
        # Reserved before the claim, with no await between: one try per row in this process.
        reserved = self._reserve(new.key) if may else None
        try:
            row = await asyncio.to_thread(
                self.store.enqueue_delivery,
                new,
                claim_for=self.owner if may else None,
                lease=LEASE,
            )
        except StoreError as exc:
            self._unreserve(new.key, reserved, Pending("database unavailable"))
            if not self._store_down:
                log.error("outbox unavailable (%s): sending without a record", exc)
                self._store_down = True
            return await self._send_unrecorded(new)
        self._store_down = False
        if reserved is not None and row.state == WAITING and row.claimed_by == self.owner:
            return await self._attempt(row, reserved)
        outcome = _finished_outcome(row) or self._not_now(attempt, row)
        self._unreserve(new.key, reserved, outcome)
        return outcome

    async def send_row(self, row: Delivery, *, attempt: bool = True) -> Outcome:
        """Try a row already in the outbox (a page the escalation wrote), as `send` does."""
        finished = _finished_outcome(row)
        if finished is not None:
            return finished
        running = self._in_flight.get(row.key)
        if running is not None:
            return await asyncio.shield(running)
        if not attempt or not self.health.may_try():
            return self._not_now(attempt, row)
        reserved = self._reserve(row.key)
        held = await asyncio.to_thread(self.store.claim_delivery, row.id, self.owner, LEASE)
        if held is not None:
            return await self._attempt(held, reserved)
        latest = await asyncio.to_thread(self.store.delivery, row.key)
        outcome = (_finished_outcome(latest) if latest is not None else None) or self._not_now(
            attempt, latest or row
        )
        self._unreserve(row.key, reserved, outcome)
        return outcome

    def _reserve(self, key: str) -> asyncio.Future[Outcome]:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        return done

    def _unreserve(
        self, key: str, reserved: asyncio.Future[Outcome] | None, outcome: Outcome
    ) -> None:
        if reserved is not None:
            self._in_flight.pop(key, None)
            reserved.set_result(outcome)

    def _not_now(self, attempt: bool, row: Delivery) -> Pending:
        """Why a waiting row was not tried now (each is quiet: the outbox sends it later)."""
        if row.claimed_by is not None and row.claimed_by != self.owner:
            return Pending("another bot is sending it", quiet=True)
        if attempt and self.health.down_since is not None:
            self._wake.set()
            since = f"{self.health.down_since:%H:%M:%S} UTC"
            return Pending(f"Slack unreachable since {since} ({self.health.cause})", quiet=True)
        self._wake.set()
        return Pending("waiting in the outbox behind an earlier message", quiet=True)

    async def wait(self, key: str, *, poll_s: float = 2.0) -> Outcome:
        """Until the row of `key` is finished (sent, refused, expired or dropped)."""
        while True:
            event = self._finished.setdefault(key, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), poll_s)
            row = await asyncio.to_thread(self.store.delivery, key)
            if row is None:
                return Dropped("not in the outbox")
            outcome = _finished_outcome(row)
            if outcome is not None:
                self._finished.pop(key, None)
                return outcome
            event.clear()

    def _tell_waiters(self, key: str) -> None:
        event = self._finished.get(key)
        if event is not None:
            event.set()

    async def _send_unrecorded(self, new: NewDelivery) -> Outcome:
        message = Message(new.text or "", new.blocks or [])
        try:
            ref = await _transmit(self.sender, new.op, new, message, new.thread_ts)
        except ChatError as exc:
            if permanent(exc):
                return Refused(exc)
            return Pending(exc.describe(), quiet=exc.outage, recorded=False)
        return Sent(ref)

    # --- one try ----------------------------------------------------------------------------

    async def _attempt(self, row: Delivery, reserved: asyncio.Future[Outcome]) -> Outcome:
        """Try a row this outbox holds (claimed, and reserved in `_in_flight`); every other
        caller for it meanwhile gets this try's outcome."""
        outcome: Outcome = Pending("not tried")
        self._held[row.key] = row.id
        self._holding.set()
        try:
            outcome = await self._deliver(row)
        except StoreError as exc:
            log.error("outbox row %s not recorded after its try: %s", row.key, exc)
            outcome = Pending(f"database: {exc}")
        except Exception:
            log.exception("outbox row %s failed unexpectedly; trying again later", row.key)
            await self._retry(row, None, in_doubt=row.in_doubt, error="internal error")
            outcome = Pending("internal error")
        finally:
            self._held.pop(row.key, None)
            if not self._held:
                self._holding.clear()
            self._unreserve(row.key, reserved, outcome)
            if not isinstance(outcome, Pending):
                self._tell_waiters(row.key)
        return outcome

    async def _deliver(self, row: Delivery) -> Outcome:
        now = self.clock()
        if row.expires_at is not None and now > row.expires_at:
            return await self._expire(row)
        if row.op == RESPOND and now - row.created_at > RESPONSE_URL_VALID_FOR:
            return await self._to_dm(row, "its response_url expired")
        chat_error: ChatError | None = None
        try:
            if row.in_doubt and row.op in (POST, UPLOAD):
                found = await self._look(row)
                if found is not None:
                    await self._finish(row, SENT, found)
                    self.health.answered(self._waiting_count)
                    return Sent(found)
            message = await self._message(row)
            if message is None:
                await self._finish(row, DROPPED, error="no longer wanted")
                return Dropped("no longer wanted")
            thread_ts = await self._thread_ts(row)
            ref = await self._pace(
                row, lambda: _transmit(self.sender, row.op, row, message, thread_ts)
            )
        except ChatError as exc:
            chat_error = exc
        except _NotYet as not_yet:
            return not_yet.outcome
        if chat_error is None:
            await self._finish(row, SENT, ref)
            self.health.answered(self._waiting_count)
            return Sent(ref)
        return await self._failed(row, chat_error)

    async def _look(self, row: Delivery) -> MessageRef | None:
        """After a try that may have landed: is the message in its conversation already?"""
        thread_ts = row.thread_ts
        if thread_ts is None and row.thread_of is not None:
            parent = await asyncio.to_thread(self.store.delivery, row.thread_of)
            thread_ts = parent.sent_ts if parent is not None else None
        if row.op == UPLOAD:
            assert row.channel is not None
            name = str(row.payload.get("filename", ""))

            def look() -> Awaitable[MessageRef | None]:
                return self.sender.find_uploaded(
                    name, channel=str(row.channel), thread_ts=thread_ts
                )
        else:

            def look() -> Awaitable[MessageRef | None]:
                return self.sender.find_posted(
                    row.key, channel=row.channel, user_id=row.user_id, thread_ts=thread_ts
                )

        try:
            return await self._pace(row, look)
        except ChatError as exc:
            if exc.outage:
                raise
            # Cannot look (most likely a missing *:history scope): better twice than never.
            log.error(
                "cannot look for %s in Slack (%s); sending it again — the app needs the "
                "channels:history, groups:history, im:history and mpim:history scopes",
                row.about or row.key,
                exc.error,
            )
            return None

    async def _message(self, row: Delivery) -> Message | None:
        if row.text is not None:
            message = Message(row.text, row.blocks or [])
        else:
            renderer = self._renderers.get(row.kind)
            if renderer is None:
                raise ChatError(f"nothing renders {row.kind} here")
            rendered = await renderer(row)
            if rendered is None:
                return None
            message = rendered
        if row.op not in (UPDATE, UPLOAD):
            message = late_note(message, row, self.clock(), self.health.outage_since(row.due_at))
        return message

    async def _thread_ts(self, row: Delivery) -> str | None:
        """The thread it goes in: given, or its first message's once that is posted."""
        if row.thread_ts is not None or row.thread_of is None:
            return row.thread_ts
        parent = await asyncio.to_thread(self.store.delivery, row.thread_of)
        if parent is not None and parent.sent_ts is not None:
            return parent.sent_ts
        if parent is None or parent.state != WAITING:
            await self._finish(row, DROPPED, error="its thread's first message was never posted")
            raise _NotYet(Dropped("no thread to post in"))
        await self._retry(row, NOT_READY, in_doubt=row.in_doubt, error="waiting for its thread")
        raise _NotYet(Pending("waiting for the thread's first message"))

    async def _pace(self, row: Delivery, send: Callable[[], Awaitable[object]]) -> MessageRef:
        pacer = self.replies if row.lane == LANE_REPLY else self.pacer
        priority = Priority.PAGE if row.lane == LANE_PAGE else Priority.ROUTINE
        destination = {UPDATE: UPDATES, RESPOND: "response_url"}.get(row.op, row.destination)
        return await pacer.call(destination, priority, send, retry_rate_limited=False)  # type: ignore[return-value]

    async def _failed(self, row: Delivery, exc: ChatError) -> Outcome:
        if row.op == RESPOND and exc.error in SPENT_RESPONSE_URL:
            return await self._to_dm(row, f"its response_url is spent ({exc.error})")
        if permanent(exc):
            await self._finish(row, REFUSED, error=exc.error)
            return Refused(exc)
        if exc.outage:
            self.health.failed(exc)
        delay = exc.retry_after_s if exc.retry_after_s else backoff_s(row.attempts)
        in_doubt = row.op in (POST, UPLOAD) and (exc.in_doubt or (row.in_doubt and exc.outage))
        await self._retry(row, timedelta(seconds=delay), in_doubt=in_doubt, error=exc.describe())
        log.debug("outbox row %s not delivered (%s); again in %.1f s", row.key, exc, delay)
        return Pending(exc.describe(), quiet=exc.outage)

    async def _to_dm(self, row: Delivery, why: str) -> Outcome:
        if row.user_id is None:
            return await self._expire(row)
        log.info("%s: %s; sending it as a direct message", row.about or row.key, why)
        await asyncio.to_thread(
            self.store.retry_delivery,
            row.id,
            self.owner,
            next_try_at=self.clock(),
            in_doubt=False,
            error=why,
            as_dm=True,
        )
        self._wake.set()
        return Pending(why)

    async def _expire(self, row: Delivery) -> Outcome:
        await self._finish(row, EXPIRED, error="past its usefulness")
        _log_expired(row, self.health)
        return Refused(ChatError("expired"))

    async def _finish(
        self, row: Delivery, state: str, ref: MessageRef | None = None, error: str | None = None
    ) -> None:
        await asyncio.to_thread(
            self.store.finish_delivery,
            row.id,
            self.owner,
            state,
            channel=ref.channel if ref else None,
            ts=ref.ts if ref else None,
            error=error,
        )

    async def _retry(
        self, row: Delivery, delay: timedelta | None, *, in_doubt: bool, error: str
    ) -> None:
        wait = delay if delay is not None else timedelta(seconds=backoff_s(row.attempts))
        await asyncio.to_thread(
            self.store.retry_delivery,
            row.id,
            self.owner,
            next_try_at=self.clock() + wait,
            in_doubt=in_doubt,
            error=error,
        )

    def _waiting_count(self) -> int:
        return self.waiting

    # --- the worker -------------------------------------------------------------------------

    async def _run(self) -> None:
        pruned_at: datetime | None = None
        while True:
            delay = IDLE_ROUND_S
            try:
                if pruned_at is None or self.clock() - pruned_at > timedelta(hours=1):
                    pruned_at = self.clock()
                    await asyncio.to_thread(self.store.prune_deliveries, pruned_at - KEEP_FINISHED)
                delay = await self._round()
                self._store_down = False
            except StoreError as exc:
                if not self._store_down:  # once per database outage, not once a round
                    log.error("outbox not read: %s — check EVENTMESH_DATABASE_URL", exc)
                    self._store_down = True
            except Exception:
                log.exception("outbox round failed; next round in %.0f s", IDLE_ROUND_S)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _round(self) -> float:
        """Start sending what is due; returns how long to wait for the next round."""
        await ACKS_FIRST.turn()  # a round's reads and sends after a burst's acks
        # The round's three reads in one hand-off to a thread: an idle bot's round is one
        # wake-up of the loop, not three.
        expired, rows, backlog = await asyncio.to_thread(_round_reads, self.store)
        for row in expired:
            _log_expired(row, self.health)
            self._tell_waiters(row.key)
        self._measured(*backlog)
        now = self.clock()
        if not self.health.may_try():
            assert self.health.next_probe is not None
            until_probe = (self.health.next_probe - now).total_seconds()
            return max(0.05, min(IDLE_ROUND_S, until_probe))
        self._groups = {name: task for name, task in self._groups.items() if not task.done()}
        groups: dict[str, list[Delivery]] = {}
        for row in rows:
            groups.setdefault(_group(row), []).append(row)
        for name, group in groups.items():
            head = group[0]
            if name in self._groups or head.next_try_at > now or _held(head, now):
                continue
            self._groups[name] = asyncio.create_task(self._drain(group), name=f"outbox-{name}")
            if self.health.down:
                break  # Slack is away: one probe at a time
        if rows:
            return IDLE_ROUND_S
        # On the beat the bot's other periodic work keeps (bot/clock.py): one wake-up for both.
        return next_beat(QUIET_ROUND_S, time.time()) - time.time()

    async def _drain(self, group: list[Delivery]) -> None:
        """Send a conversation's rows in order, until one does not go."""
        for row in group:
            if row.next_try_at > self.clock():
                return
            running = self._in_flight.get(row.key)
            if running is not None:  # a writer is trying it right now: its outcome is ours
                outcome = await asyncio.shield(running)
            else:
                reserved = self._reserve(row.key)
                held = await asyncio.to_thread(self.store.claim_delivery, row.id, self.owner, LEASE)
                if held is None:  # sent meanwhile, or another bot has it
                    self._unreserve(row.key, reserved, Pending("not claimed"))
                    return
                outcome = await self._attempt(held, reserved)
                if isinstance(outcome, Sent) and held.subject:
                    await self._tell_writer(held)
            if isinstance(outcome, Pending):
                return
        self._wake.set()  # more may have come behind these

    async def _tell_writer(self, row: Delivery) -> None:
        for prefix, hook in self._hooks:
            if row.subject and row.subject.startswith(prefix):
                try:
                    await hook(row)
                except Exception:
                    log.exception("after delivering %s: its writer's hook failed", row.key)

    def _held_ids(self) -> list[int]:
        return list(self._held.values())

    async def _renew_claims(self) -> None:
        """Every third of the lease while tries hold claims; asleep while none do."""
        while True:
            await self._holding.wait()
            await asyncio.sleep(LEASE.total_seconds() / 3)
            if not self._held:
                continue
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(
                    self.store.renew_delivery_claims, self._held_ids(), self.owner, LEASE
                )

    def _measured(self, count: int, oldest: datetime | None) -> None:
        self.waiting = count
        if self.telemetry is not None:
            age = (self.clock() - oldest).total_seconds() if oldest is not None else 0.0
            self.telemetry.outbox_depth.set(count)
            self.telemetry.outbox_oldest_seconds.set(max(0.0, age))
            self.telemetry.slack_reachable.set(0 if self.health.down else 1)


def _round_reads(
    store: Store,
) -> tuple[list[Delivery], list[Delivery], tuple[int, datetime | None]]:
    """A round's store work, in order (blocking: call in a thread): the rows past their
    usefulness finished as expired, the rows waiting, and the backlog for the metrics."""
    expired = store.expire_deliveries()
    return expired, store.waiting_deliveries(ROUND_LIMIT), store.outbox_backlog()


def outbox_of(chat: Sender | Outbox, store: Store, clock: Clock) -> Outbox:
    """The process's outbox (what Services hands to incidents and alerting), or, for a bare
    chat — an in-process test that drives the timers by hand — an outbox of its own, with no
    worker and no pace of its own, so every retry is the timer's."""
    if isinstance(chat, Outbox):
        return chat
    return Outbox(store, chat, clock=clock, paced=False)


def _group(row: Delivery) -> str:
    """Rows that keep their order among themselves: all pages (each level's people before the
    next level's), else one conversation's (or one message's updates)."""
    if row.lane == LANE_PAGE and row.op == POST and row.channel is None:
        return "pages"
    return row.destination


def _held(row: Delivery, now: datetime) -> bool:
    return row.claimed_by is not None and row.claimed_until is not None and row.claimed_until > now


def _finished_outcome(row: Delivery) -> Outcome | None:
    if row.state == SENT:
        where, ts = row.sent_channel, row.sent_ts
        return Sent(MessageRef(where, ts) if where and ts else None)
    if row.state == EXPIRED:
        return Refused(ChatError("expired"))
    if row.state == REFUSED:
        return Refused(ChatError(row.last_error or row.state))
    if row.state == DROPPED:
        return Dropped(row.last_error or "dropped")
    return None


def _log_expired(row: Delivery, health: SlackHealth) -> None:
    why = (
        f"Slack unreachable since {health.down_since:%H:%M:%S} UTC"
        if health.down_since
        else (row.last_error or "not delivered")
    )
    log.warning(
        "dropped, no longer useful: %s (%s) — written %s UTC, %d tries (%s)",
        row.kind,
        row.about or row.key,
        f"{row.created_at:%H:%M:%S}",
        row.attempts,
        why,
    )


async def _transmit(
    sender: Sender, op: str, row: Delivery | NewDelivery, message: Message, thread_ts: str | None
) -> MessageRef | None:
    """One call to Slack for a row."""
    if op == UPDATE:
        assert row.channel is not None and row.ts is not None
        await sender.update(MessageRef(row.channel, row.ts), message)
        return None
    if op == RESPOND:
        assert row.response_url is not None
        await sender.respond(row.response_url, message)
        return None
    if op == UPLOAD:
        # The file's bytes are the row's text (a post-mortem's Markdown): `message` is unused.
        assert row.channel is not None
        upload = Upload(
            filename=str(row.payload.get("filename") or "file.txt"),
            content=(row.text or "").encode(),
            title=str(row.payload.get("title") or ""),
        )
        await sender.upload(row.channel, upload, thread_ts=thread_ts)
        return None
    if row.channel is None:
        assert row.user_id is not None
        return await sender.dm(row.user_id, message, key=row.key)
    return await sender.post(row.channel, message, thread_ts=thread_ts, key=row.key)


def _unpaced(sender: Sender) -> PacedChat:
    return PacedChat(sender, post_interval_s=0, update_interval_s=0)  # type: ignore[arg-type]
