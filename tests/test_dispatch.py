"""The dispatcher's contract with handlers: help by role, and failures that never leak."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest

from bot.config import load_config
from bot.runbook.health.health import HealthChecker
from bot.runbook.health.probe import Prober
from bot.scheduler import Scheduler
from bot.slack.access import Usage
from bot.slack.chat import Message
from bot.slack.console import ConsoleChat
from bot.slack.dispatch import CommandRequest, Context, Dispatcher, command
from bot.slack.services import Services
from bot.store import Base, Store, StoreError
from bot.telemetry import Telemetry
from bot.workers import WorkerPool
from tests.conftest import EXAMPLE_CONFIG


@command(
    "/deploy",
    Usage("/deploy status", "what runs now"),
    Usage("/deploy <env>", "deploy", role="deployers"),
)
async def deploy(ctx: Context) -> None:
    """Deploy."""
    if ctx.request.text == "staging" and not ctx.may("deployers"):
        return await ctx.deny("Only deployers may run /deploy staging.")
    if ctx.request.text == "explode-before-ack":
        raise RuntimeError("secret detail that must not reach the user")
    if ctx.request.text == "work":
        await ctx.ack()

        async def work() -> str:
            await ctx.conversation.post(Message("the work ran"))
            return "done"

        ctx.hand_off(work)
        return
    if ctx.request.text == "record-before-ack":
        await asyncio.to_thread(ctx.services.store.audit_entries)
        await ctx.ack()
        return
    if ctx.request.text == "record":
        await ctx.ack()

        async def record() -> str:
            await asyncio.to_thread(ctx.services.store.audit_entries)
            return "recorded"

        ctx.hand_off(record)
        return
    if ctx.request.text == "explode-later":
        await ctx.ack()

        async def work() -> str:
            raise RuntimeError("boom in the background")

        ctx.hand_off(work)
        return
    await ctx.answer_help()


def run(
    tmp_path: Path, text: str, user: str, *, broken_store: bool = False
) -> tuple[list[Message | None], str, Store, Telemetry]:
    acks: list[Message | None] = []
    out = io.StringIO()
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    if broken_store:
        Base.metadata.drop_all(store.engine)  # every read and write now fails in the database
    telemetry = Telemetry()

    async def scenario() -> None:
        workers = WorkerPool(size=2)
        workers.start()
        with Prober() as prober:
            http = httpx.AsyncClient()
            config = load_config(EXAMPLE_CONFIG)
            services = Services(
                config=config,
                store=store,
                chat=ConsoleChat(out, color=False),
                health=HealthChecker(prober, config.thresholds, store, telemetry),
                telemetry=telemetry,
                workers=workers,
                scheduler=Scheduler(store),
                http=http,
            )
            dispatcher = Dispatcher(services, [deploy])

            async def ack(message: Message | None) -> None:
                acks.append(message)

            request = CommandRequest("/deploy", text, user, "C1", response_url="console://x")
            await dispatcher.handle_command(request, ack)
            await workers.join()
            await http.aclose()
        await workers.stop()

    asyncio.run(scenario())
    return acks, out.getvalue(), store, telemetry


def counted(telemetry: Telemetry, outcome: str) -> float:
    value = telemetry.registry.get_sample_value(
        "eventmesh_bot_commands_total", {"command": "/deploy", "outcome": outcome}
    )
    return value or 0.0


def test_help_lists_only_what_the_user_may_run(tmp_path: Path) -> None:
    acks, _, _, _ = run(tmp_path, "help", "U0SOMEONE")
    (message,) = acks
    assert message is not None
    assert "/deploy status" in message.text and "/deploy <env>" not in message.text

    acks, _, _, _ = run(tmp_path, "help", "U0DEPLOY1")  # a deployer in the example config
    assert acks[0] is not None and "/deploy <env>" in acks[0].text


def test_a_handler_crash_before_ack_is_acked_plainly_and_audited(tmp_path: Path) -> None:
    acks, _, store, telemetry = run(tmp_path, "explode-before-ack", "U1")
    (message,) = acks
    assert message is not None
    assert "internal error" in message.text
    assert "secret detail" not in message.text and "Traceback" not in message.text
    (entry,) = store.audit_entries()
    assert entry.outcome == "error"
    assert counted(telemetry, "error") == 1


def test_a_background_crash_tells_the_user_and_is_audited(tmp_path: Path) -> None:
    acks, printed, store, telemetry = run(tmp_path, "explode-later", "U1")
    assert acks == [None]  # the plain ack went out before the work started
    assert "internal error (audit #1)" in printed
    assert "boom" not in printed
    (entry,) = store.audit_entries()
    assert (entry.outcome, entry.result) == ("error", "internal error")
    assert counted(telemetry, "error") == 1


def test_commands_still_run_when_the_store_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acks, printed, store, telemetry = run(tmp_path, "work", "U1", broken_store=True)
    assert acks == [None]
    assert "the work ran" in printed
    assert counted(telemetry, "ok") == 1
    assert "not audited: /deploy by U1" in caplog.text
    assert "EVENTMESH_DATABASE_URL" in caplog.text
    with pytest.raises(StoreError, match="audit_entries: OperationalError"):
        store.audit_entries()


def test_denied_is_answered_privately_audited_and_counted(tmp_path: Path) -> None:
    acks, printed, store, telemetry = run(tmp_path, "staging", "U0SOMEONE")
    (message,) = acks
    assert message is not None and "Only deployers" in message.text
    assert printed == ""  # nothing in the channel
    (entry,) = store.audit_entries()
    assert (entry.outcome, entry.result) == ("denied", "Only deployers may run /deploy staging.")
    assert counted(telemetry, "denied") == 1


def test_a_store_failure_is_said_as_such_nothing_done_and_try_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # After the ack, in the background: the user is told (privately), not left guessing.
    acks, printed, _, telemetry = run(tmp_path, "record", "U1", broken_store=True)
    assert acks == [None]
    assert "database is unreachable, so nothing was done" in printed
    assert "/deploy" in printed and "again in a minute" in printed
    assert "internal error" not in printed
    assert counted(telemetry, "error") == 1
    assert "/deploy 'record' by U1 not done: the store is unreachable" in caplog.text
    assert "EVENTMESH_DATABASE_URL" in caplog.text

    # Before the ack: the ack itself says so.
    acks, printed, _, telemetry = run(tmp_path / "b", "record-before-ack", "U1", broken_store=True)
    (message,) = acks
    assert message is not None and "database is unreachable, so nothing was done" in message.text
    assert "internal error" not in message.text
    assert counted(telemetry, "error") == 1
