"""From a slash command or button press to its handler — the one path Slack and console share.

A handler is a small async function (see handlers/): it parses, acks, and hands long work off.
The dispatcher around it does what every command needs the same way: who may (the declared
rule, bot/slack/access.py, before the handler runs), the per-user rate (bot/slack/limits.py),
room in the workers' lane, the ack deadline and its latency metric, the audit row, the outcome
counter, and turning any exception into a log line for operators and a plain sentence for the
user — a StoreError (the database is away) into "the store is unreachable, nothing was done,
try again", for every command and button alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.acks_first import ACKS_FIRST
from bot.config import Config
from bot.slack import blocks
from bot.slack.access import Allow, Role, Usage, refusal, usage_for
from bot.slack.chat import Asked, Conversation, Message, MessageRef, answering
from bot.slack.services import Services
from bot.store import StoreError, Timer
from bot.workers import Busy, Lane

log = logging.getLogger(__name__)

Outcome = Literal["ok", "help", "usage", "denied", "limited", "error"]
Ack = Callable[[Message | None], Awaitable[None]]


@dataclass(frozen=True)
class CommandRequest:
    """A slash command, from Slack's payload or a console line."""

    command: str
    text: str
    user_id: str
    channel_id: str
    response_url: str | None = None
    received_at: float = field(default_factory=time.perf_counter)

    @property
    def name(self) -> str:
        return self.command

    @property
    def message_ref(self) -> MessageRef | None:
        return None


@dataclass(frozen=True)
class ActionRequest:
    """A button press: its action_id, the record id in its value, and the message it sits on.

    `block_id` is the id of the actions block the button was in; a builder may put the state
    the buttons were shown for in it (an incident's `incident:INC-3:7`), so a press on an
    older copy of a message can be told from a current one.
    """

    action_id: str
    value: str
    user_id: str
    channel_id: str
    message_ts: str | None = None
    response_url: str | None = None
    block_id: str | None = None
    received_at: float = field(default_factory=time.perf_counter)

    @property
    def name(self) -> str:
        return self.action_id

    @property
    def text(self) -> str:
        return self.value

    @property
    def message_ref(self) -> MessageRef | None:
        return MessageRef(self.channel_id, self.message_ts) if self.message_ts else None


@dataclass(frozen=True)
class EventRequest:
    """An Events API event (app_home_opened): its type, whose it is, and the event as sent.

    Slack wants no answer to an event: Bolt acks it before the listener runs.
    """

    event_type: str
    user_id: str
    event: Mapping[str, Any]
    received_at: float = field(default_factory=time.perf_counter)

    @property
    def name(self) -> str:
        return self.event_type

    @property
    def text(self) -> str:
        return str(self.event.get("tab") or "")  # what the audit keeps of it

    @property
    def channel_id(self) -> str:
        return str(self.event.get("channel") or "")

    @property
    def response_url(self) -> str | None:
        return None

    @property
    def message_ref(self) -> MessageRef | None:
        return None


Request = CommandRequest | ActionRequest | EventRequest


Work = Callable[[], Awaitable[str]]


class Context:
    """One command or button press on its way through a handler."""

    def __init__(
        self, request: Request, services: Services, ack: Ack, usage: Sequence[Usage] = ()
    ) -> None:
        self.request = request
        self.services = services
        self._ack = ack
        self._usage = usage
        self.acked = False
        self.outcome: Outcome = "ok"
        self.result = ""
        self.work: Work | None = None
        self.lane: Lane = "short"
        self._releases: list[Callable[[], None]] = []
        self.on_ack: Callable[[], None] = lambda: None

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def conversation(self) -> Conversation:
        return Conversation(
            self.services.chat,
            self.request.channel_id,
            self.request.user_id,
            self.request.response_url,
        )

    def may(self, role: Role) -> bool:
        """What the config says of the asking user (bot/slack/access.py Policy.named); the
        dispatcher has already applied the declared rule, with the store's part."""
        return self.services.policy.named(role, self.user_id)

    async def ack(self, message: Message | None = None) -> None:
        """Acknowledge once; a message here is shown to the asking user only."""
        if self.acked:
            return
        self.acked = True
        self.on_ack()
        await self._ack(message)
        self.services.telemetry.ack_seconds.labels(command=self.request.name).observe(
            time.perf_counter() - self.request.received_at
        )

    async def answer_help(self) -> None:
        await self._answer_usage(None, outcome="help")

    async def answer_usage(self, problem: str) -> None:
        """Bad input: say what was wrong and how to ask; nothing runs."""
        await self._answer_usage(problem, outcome="usage")

    async def _answer_usage(self, problem: str | None, *, outcome: Outcome) -> None:
        policy = self.services.policy
        allowed = [u for u in self._usage if await policy.holds(u.role, self.user_id)]
        await self.ack(blocks.usage(self.request.name, allowed, problem))
        self.outcome = outcome
        self.result = problem or "help shown"

    async def reply_privately(self, message: Message) -> None:
        """After the ack: answer the asking user alone (Slack's response_url, ephemeral)."""
        if self.request.response_url is None:
            log.warning("%s: no response_url to answer %s with", self.request.name, self.user_id)
            return
        await self.services.chat.respond(self.request.response_url, message)

    async def deny(self, reason: str, hint: str = "") -> None:
        """Refuse: said privately (with the hint: where the role comes from), audited as
        denied with the reason."""
        await self.ack(blocks.denied(f"{reason} {hint}" if hint else reason))
        self.outcome = "denied"
        self.result = reason

    async def limited(self, reason: str, retry_after_s: float) -> None:
        """Refuse for a limit: nothing runs; the person is told when to try again."""
        await self.ack(blocks.busy(reason, retry_after_s))
        self.outcome = "limited"
        self.result = f"{reason}; try again in {retry_after_s:.0f} s"

    async def hold_environment(self, environment: str, what: str) -> bool:
        """Take one of the environment's slots for commands that log into its hosts (limits.
        ssh_per_environment), released when this request's work is done; False (answered
        privately) when they are all taken."""
        taken = self.services.environment_slots.take(environment, what, self.user_id)
        if isinstance(taken, str):
            await self.ack(blocks.wait_your_turn(taken))
            self.outcome = "limited"
            self.result = taken
            return False
        self._releases.append(taken)
        return True

    def release(self) -> None:
        for release in self._releases:
            release()
        self._releases.clear()

    def hand_off(self, work: Work, *, lane: Lane = "short") -> None:
        """Run work on the bot's workers after the ack; its return value is the audit result.

        Work that lasts minutes (a deploy, a watch) goes in the long lane, so it never holds
        a slot that a /health report needs.
        """
        self.work = work
        self.lane = lane


Handler = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    usage: tuple[Usage, ...]
    handler: Handler


@dataclass(frozen=True)
class ActionSpec:
    action_id: str
    button: str  # the button's label, as refusals and the policy table name it
    allow: Allow
    handler: Handler


def command(name: str, *usage: Usage) -> Callable[[Handler], CommandSpec]:
    """Declare a slash command; the handler's docstring is its one-line summary."""

    def register(handler: Handler) -> CommandSpec:
        summary = (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else name
        return CommandSpec(name=name, summary=summary, usage=usage, handler=handler)

    return register


def action(action_id: str, button: str, *, allow: Allow) -> Callable[[Handler], ActionSpec]:
    """Declare a button's handler and who may press it (bot/slack/access.py): there is no
    button without its rule."""

    def register(handler: Handler) -> ActionSpec:
        return ActionSpec(action_id=action_id, button=button, allow=allow, handler=handler)

    return register


@dataclass(frozen=True)
class EventSpec:
    event_type: str
    handler: Handler


def event(event_type: str) -> Callable[[Handler], EventSpec]:
    """Declare the handler of an Events API event type (the bot subscribes to it)."""

    def register(handler: Handler) -> EventSpec:
        return EventSpec(event_type=event_type, handler=handler)

    return register


TimerHandler = Callable[[Services, Timer], Awaitable[None]]


@dataclass(frozen=True)
class TimerSpec:
    """What to do when a durable timer of `kind` falls due (see bot/scheduler.py)."""

    kind: str
    handler: TimerHandler


def timer(kind: str) -> Callable[[TimerHandler], TimerSpec]:
    """Declare the handler of a timer kind: the time-driven twin of @command and @action."""

    def register(handler: TimerHandler) -> TimerSpec:
        return TimerSpec(kind=kind, handler=handler)

    return register


class Dispatcher:
    def __init__(
        self,
        services: Services,
        commands: Sequence[CommandSpec],
        actions: Sequence[ActionSpec] = (),
        events: Sequence[EventSpec] = (),
    ) -> None:
        self.services = services
        self.commands = {spec.name: spec for spec in commands}
        self.actions = {spec.action_id: spec for spec in actions}
        self.events = {spec.event_type: spec for spec in events}

    async def handle_command(self, request: CommandRequest, ack: Ack) -> None:
        spec = self.commands.get(request.command)
        if spec is None:
            await ack(blocks.unknown_command(request.command, sorted(self.commands)))
            return
        ctx = Context(request, self.services, ack, spec.usage)
        await self._run(ctx, spec.handler, lambda: self._command_admitted(ctx, spec))

    async def handle_action(self, request: ActionRequest, ack: Ack) -> None:
        spec = self.actions.get(request.action_id)
        if spec is None:
            log.warning("button %r has no handler; ignoring the press", request.action_id)
            await ack(None)
            return
        ctx = Context(request, self.services, ack)
        await self._run(ctx, spec.handler, lambda: self._action_admitted(ctx, spec))

    async def handle_event(self, request: EventRequest, ack: Ack) -> None:
        spec = self.events.get(request.event_type)
        if spec is None:
            log.warning("event %r has no handler; ignoring it", request.event_type)
            await ack(None)
            return
        ctx = Context(request, self.services, ack)
        await self._run(ctx, spec.handler, lambda: self._room(ctx, "press"))

    async def _command_admitted(self, ctx: Context, spec: CommandSpec) -> bool:
        """The usage line's role, then the user's rate for this command, then room to work."""
        request = ctx.request
        found = usage_for(spec.usage, request.text, self.services.config)
        if found is not None:
            usage, shown = found
            if not await self.services.policy.holds(usage.role, ctx.user_id):
                await ctx.deny(*refusal(usage.role, f"run {shown}"))
                return False
        wait = await self.services.limits.command_wait(ctx.user_id, spec.name)
        if wait is not None:
            rate = self.services.config.limits.commands
            await ctx.limited(
                f"You ran {spec.name} {rate.count} times in the last "
                f"{blocks.duration_text(rate.per)} (limits.commands)",
                wait,
            )
            return False
        return await self._room(ctx, "short")

    async def _action_admitted(self, ctx: Context, spec: ActionSpec) -> bool:
        """The button's rule (its role, or the record naming the presser), then room."""
        allow, user = spec.allow, ctx.user_id
        if not await self.services.policy.holds(allow.role, user) and not (
            allow.owner is not None and await allow.owner(self.services, ctx.request.text, user)
        ):
            await ctx.deny(*refusal(allow.role, f"press {spec.button}", allow.also))
            return False
        return await self._room(ctx, "press")

    async def _room(self, ctx: Context, lane: Lane) -> bool:
        wait = self.services.workers.busy_for(lane)
        if wait is None:
            return True
        await ctx.limited("The bot is busy: too much work is waiting", wait)
        return False

    async def _run(
        self, ctx: Context, handler: Handler, admitted: Callable[[], Awaitable[bool]]
    ) -> None:
        # What the handler sends is a reply to this request (see bot/slack/durable_chat.py).
        replying = answering.set(_asked(ctx.request))
        try:
            await self._handle(ctx, handler, admitted)
        finally:
            answering.reset(replying)

    async def _handle(
        self, ctx: Context, handler: Handler, admitted: Callable[[], Awaitable[bool]]
    ) -> None:
        request = ctx.request
        # Until this request is acked, background work waits (bot/acks_first.py).
        ctx.on_ack = ACKS_FIRST.arrived()
        try:
            await self._admit_and_ack(ctx, handler, admitted)
        finally:
            ctx.on_ack()
        audit_id = await self._audit_start(request)
        if ctx.work is None:
            await self._finish(ctx, audit_id)
            return
        # Presses have a lane of their own: never behind slash-command work.
        lane: Lane = (
            "press" if ctx.lane == "short" and isinstance(request, ActionRequest) else ctx.lane
        )
        try:
            self.services.workers.submit(request.name, lambda: self._work(ctx, audit_id), lane=lane)
        except Busy as busy:
            ctx.outcome = "limited"
            ctx.result = str(busy)
            await ctx.reply_privately(
                blocks.busy("The bot is busy: too much work is waiting", busy.retry_after_s)
            )
            await self._finish(ctx, audit_id)

    async def _admit_and_ack(
        self, ctx: Context, handler: Handler, admitted: Callable[[], Awaitable[bool]]
    ) -> None:
        request = ctx.request
        try:
            if await admitted():
                await handler(ctx)
        except StoreError as exc:
            self._store_failed(ctx, exc)
            ctx.work = None
            if not ctx.acked:
                await ctx.ack(_unreachable(request))
            else:
                await self._tell_user(ctx, _unreachable(request))
        except Exception:
            log.exception("%s failed while handling %r", request.name, request.text[:200])
            ctx.outcome, ctx.result, ctx.work = "error", "internal error in handler", None
            if not ctx.acked:
                await ctx.ack(blocks.internal_error(request.name))
        # A handler that forgot to ack must not leave Slack waiting for its 3 seconds.
        await ctx.ack()

    async def _audit_start(self, request: Request) -> int | None:
        # An unavailable store must not stop /health: the audit is lost, loudly, and work goes on.
        try:
            return await asyncio.to_thread(
                self.services.store.audit_start,
                user_id=request.user_id,
                channel_id=request.channel_id,
                command=request.name,
                text=request.text,
            )
        except StoreError as exc:
            log.error(
                "not audited: %s by %s (%s) — check the database at EVENTMESH_DATABASE_URL",
                request.name,
                request.user_id,
                exc,
            )
            return None

    async def _work(self, ctx: Context, audit_id: int | None) -> None:
        assert ctx.work is not None
        started = time.perf_counter()
        replying = answering.set(_asked(ctx.request))  # the workers' tasks outlive requests
        try:
            ctx.result = await ctx.work()
        except StoreError as exc:
            self._store_failed(ctx, exc)
            await self._tell_user(ctx, _unreachable(ctx.request))
        except Exception:
            log.exception(
                "%s %r failed in the background (audit #%s)",
                ctx.request.name,
                ctx.request.text[:200],
                audit_id,
            )
            ctx.outcome, ctx.result = "error", "internal error"
            await self._tell_user(ctx, blocks.internal_error(ctx.request.name, reference=audit_id))
        finally:
            self.services.telemetry.job_seconds.labels(command=ctx.request.name).observe(
                time.perf_counter() - started
            )
            await self._finish(ctx, audit_id)
            answering.reset(replying)

    @staticmethod
    def _store_failed(ctx: Context, exc: StoreError) -> None:
        request = ctx.request
        log.error(
            "%s %r by %s not done: the store is unreachable (%s) — check the database at "
            "EVENTMESH_DATABASE_URL",
            request.name,
            request.text[:200],
            request.user_id,
            exc,
        )
        ctx.outcome, ctx.result = "error", f"store unreachable, nothing done: {exc}"[:500]

    async def _tell_user(self, ctx: Context, message: Message) -> None:
        try:
            if ctx.request.response_url:
                await self.services.chat.respond(ctx.request.response_url, message)
            else:
                await self.services.chat.post(ctx.request.channel_id, message)
        except Exception:
            log.exception("could not tell %s that %s failed", ctx.user_id, ctx.request.name)

    async def _finish(self, ctx: Context, audit_id: int | None) -> None:
        ctx.release()
        self.services.telemetry.commands.labels(command=ctx.request.name, outcome=ctx.outcome).inc()
        if audit_id is None:
            return
        try:
            await asyncio.to_thread(
                self.services.store.audit_finish, audit_id, outcome=ctx.outcome, result=ctx.result
            )
        except StoreError as exc:
            log.error("audit #%d not finished (%s) — check EVENTMESH_DATABASE_URL", audit_id, exc)


def _unreachable(request: Request) -> Message:
    return blocks.store_unreachable(request.name, press=isinstance(request, ActionRequest))


def _asked(request: Request) -> Asked:
    return Asked(
        request.name, request.text, request.user_id, request.channel_id, request.response_url
    )
