"""Alerts in process: readings into the real store (SQLite and PostgreSQL), the real scheduler's
timers swept by hand, the real Web API chat against the Slack fake, and a clock the test moves.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import AlertSettings, Config, load_config
from bot.runbook.alerts.alerts import SYNC_TIMER, Alerts
from bot.runbook.alerts.states import Metric, Observation, Reading
from bot.runbook.incidents.escalation import DEADLINE_TIMER
from bot.runbook.incidents.escalation import SYNC_TIMER as INCIDENT_SYNC_TIMER
from bot.scheduler import Scheduler
from bot.slack.alerts.alerting import Alerting
from bot.slack.incidents.incidents import Incidents
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import Alert, Store
from handlers import alerts as alert_handlers
from tests.conftest import BOT_TOKEN, EXAMPLE_CONFIG, new_channel
from tests.support.clock import ManualClock
from tests.support.incident_messages import buttons, shown
from tests.support.slack_fake import SlackFake, block_kit_errors

EVERY = timedelta(seconds=15)


class World:
    """One bot's alert machinery over a store, swept by hand."""

    def __init__(self, store_url: str, slack: SlackFake, config: Config) -> None:
        self.slack = slack
        self.config = config
        self.alerts_channel = config.slack.alerts_channel or ""
        self.incidents_channel = config.slack.incidents_channel or ""
        self.clock = ManualClock()
        self.store = Store(store_url, clock=self.clock)
        self.chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        self.restart()

    def restart(self) -> None:
        """A bot process's share, on the same store: its scheduler, its alert state cache."""
        self.scheduler = Scheduler(self.store, clock=self.clock)
        self.incidents = Incidents(
            self.config, self.store, self.chat, self.scheduler, clock=self.clock
        )
        self.alerts = Alerts(self.config, self.store, clock=self.clock)
        self.alerting = Alerting(
            self.config, self.store, self.chat, self.alerts, self.incidents, clock=self.clock
        )
        services = SimpleNamespace(alerts=self.alerts, alerting=self.alerting)
        for spec in (alert_handlers.sync, alert_handlers.remind, alert_handlers.unsilence):
            self.scheduler.on(spec.kind, functools.partial(spec.handler, services))  # type: ignore[arg-type]
        self.scheduler.on(DEADLINE_TIMER, self.incidents.on_deadline_timer)
        self.scheduler.on(INCIDENT_SYNC_TIMER, self.incidents.on_sync_timer)

    async def settle(self) -> None:
        """Fire every timer due now, and those they set due now, until none is left."""
        while await self.scheduler.sweep():
            await self.scheduler.settle()

    async def later(self, **delta: float) -> None:
        self.clock.advance(**delta)
        await self.settle()

    async def read(
        self,
        *values: float | None,
        problem: str | None = None,
        env: str = "staging",
        metric: Metric = Metric.HEALTH,
    ) -> None:
        """One scheduled check per value, EVERY apart (None: a failed check with `problem`)."""
        for value in values:
            self.clock.advance(seconds=EVERY.total_seconds())
            reading = Reading(value, problem if value is None else None)
            await self.alerts.observe([Observation(env, metric, reading)])
            await self.settle()

    def posts(self) -> list[dict[str, Any]]:
        return [m for m in self.slack.channel_messages(self.alerts_channel) if "thread_ts" not in m]

    def message(self) -> dict[str, Any]:
        (only,) = self.posts()
        return only

    def thread(self, ts: str | None = None, channel: str | None = None) -> list[str]:
        ts = ts or self.message()["ts"]
        return [
            m["blocks"][0]["text"]["text"] if m.get("blocks") else m["text"]
            for m in self.slack.channel_messages(channel or self.alerts_channel)
            if m.get("thread_ts") == ts
        ]

    def cards(self) -> list[dict[str, Any]]:
        return [
            m for m in self.slack.channel_messages(self.incidents_channel) if "thread_ts" not in m
        ]

    def alert_rows(self) -> list[Alert]:
        return self.store.alerts()

    async def press(self, action_id: str, user: str = "U0USER") -> str:
        value = next(
            e["value"]
            for b in self.message()["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == action_id
        )
        reply = await self.alerting.press(action_id, value, user)
        await self.settle()
        assert reply.answer is not None
        return shown({"text": reply.answer.text, "blocks": reply.answer.blocks})


def scenario(
    store_url: str, slack: SlackFake, body: Callable[[World], Awaitable[None]], **alerts: Any
) -> None:
    config = load_config(EXAMPLE_CONFIG)
    channels = config.slack.model_copy(
        update={"alerts_channel": new_channel(), "incidents_channel": new_channel()}
    )
    settings = AlertSettings.model_validate({**config.alerts.model_dump(), **alerts})
    config = config.model_copy(update={"slack": channels, "alerts": settings})

    async def run() -> None:
        world = World(store_url, slack, config)
        try:
            await body(world)
        finally:
            world.store.close()

    rejected = len(slack.rejected)
    asyncio.run(run())
    assert slack.rejected[rejected:] == []


def test_one_message_per_alert_edited_as_it_moves_and_a_new_alert_after_it_resolves(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.read(3, 4, 712)
        assert w.posts() == []
        await w.read(730)
        message = w.message()
        text = shown(message)
        assert ":large_yellow_circle: *Warning* · *staging* · Health check response" in text
        assert "730 ms" in text and "warning at 500 ms, critical over 2,000 ms" in text
        assert "*Last 4 readings*" in text
        assert buttons(message) == ["Acknowledge", "Silence 1h", "Escalate"]
        assert block_kit_errors(message["blocks"]) == []

        await w.read(None, None, problem="healthz: connection refused")
        assert "*Critical*" in shown(w.message())
        assert "healthz: connection refused" in shown(w.message())
        await w.read(5, 6)
        resolved = w.message()
        assert "Resolved" in shown(resolved) and "Critical at worst" in shown(resolved)
        assert buttons(resolved) == []
        assert [line.split(" (")[0] for line in w.thread()] == [
            ":arrow_double_up: Warning → Critical: healthz: connection refused",
            ":white_check_mark: Back to Normal: 6 ms",
        ]
        (alert,) = w.alert_rows()
        assert (alert.status, alert.level, alert.peak_level) == ("resolved", "Normal", "Critical")
        assert alert.shown_version == alert.version
        assert all(event.done for event in w.store.alert_events(alert.id))

        # Later it breaches again: a new alert, a new message.
        await w.later(hours=1)
        await w.read(800, 810)
        assert len(w.posts()) == 2
        first, second = w.alert_rows()
        assert second.id != first.id and second.status == "firing"

    scenario(store_url, slack, body)


def test_a_critical_alert_pages_once_and_its_resolution_is_noted_on_the_incident(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.read(2500, 2600)
        (card,) = w.cards()
        assert "Critical alert: staging · Health check response: 2,600 ms" in shown(card)
        assert "Incident INC-" in shown(w.message())
        await w.read(2700, 2800)  # still critical: no second incident
        assert len(w.cards()) == 1
        (alert,) = w.alert_rows()
        assert alert.incident_id is not None
        incident = w.store.incident(alert.incident_id)
        assert incident is not None and incident.environment == "staging"
        assert "· staging ·" in shown(card)

        await w.read(5, 5)
        notes = w.thread(card["ts"], w.incidents_channel)
        assert any(
            "Alert resolved: staging · Health check response back to Normal" in n for n in notes
        )
        assert w.store.alert(alert.id).incident_noted  # type: ignore[union-attr]

    scenario(store_url, slack, body)


def test_an_open_critical_is_reminded_every_repeat_every_until_acknowledged(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.read(2500, 2500)
        assert w.thread() == []
        await w.later(minutes=59)
        assert w.thread() == []
        await w.later(minutes=1)
        assert [line.split(" (")[0] for line in w.thread()] == [
            ":alarm_clock: Still Critical after 1 h"
        ]
        await w.later(hours=1)
        assert len(w.thread()) == 2 and "Still Critical after 2 h" in w.thread()[1]

        answer = await w.press("alert_ack", "U0LEAD")
        assert "Acknowledged" in answer
        assert "Acknowledged by <@U0LEAD>" in shown(w.message())
        await w.later(hours=3)
        assert len(w.thread()) == 2  # no more reminders
        assert "already acknowledged" in (await w.press("alert_ack")).lower()

    scenario(store_url, slack, body, repeat_every="1h")


def test_a_silence_stops_posts_and_pages_until_it_ends_and_then_they_come(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.read(700, 700)
        answer = await w.press("alert_silence")
        assert "silenced until 13:00:30 UTC" in answer
        assert "Silenced by <@U0USER> until 13:00:30 UTC" in shown(w.message())
        await w.read(2500, 2500)  # Critical while silenced
        assert "*Critical*" in shown(w.message())  # the message is kept true...
        assert w.thread() == [] and w.cards() == []  # ...but nothing is posted, nobody paged
        await w.later(minutes=59)
        assert w.cards() == []
        await w.later(seconds=30)  # the silence ends: still Critical
        assert "Silenced" not in shown(w.message())
        assert len(w.cards()) == 1
        assert [line.split(" (")[0] for line in w.thread()] == [
            ":bell: Silence over; still Critical"
        ]
        await w.later(seconds=30)  # an hour after it turned Critical: reminded as usual
        assert "Still Critical after 1 h" in w.thread()[-1]

    scenario(store_url, slack, body, silence_for="1h")


def test_flapping_is_said_once_then_nothing_until_it_is_quiet(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        # Fired, resolved, fired again (a new alert), resolved: four changes within a minute.
        await w.read(700, 5, 700, 5)
        first, latest = w.posts()
        assert "Resolved" in shown(first)
        assert ":repeat: *Flapping*" in shown(latest)
        lines = w.thread(latest["ts"])
        assert len(lines) == 1 and "Flapping: 4 changes of level within 15 min" in lines[0]
        posts = len(slack.calls_to("chat.postMessage"))
        updates = len(slack.calls_to("chat.update"))
        await w.read(700, 5, 700, 5, 700)
        assert len(slack.calls_to("chat.postMessage")) == posts
        assert len(slack.calls_to("chat.update")) == updates
        await w.later(minutes=15)
        await w.read(710)  # quiet for 15 minutes: settled where it is, a Warning
        assert len(w.posts()) == 2
        assert "*Warning*" in shown(w.posts()[-1])
        assert "Quiet again: settled at Warning" in w.thread(latest["ts"])[-1]

    scenario(store_url, slack, body, breaches_to_fire=1, passes_to_resolve=1)


def test_a_restarted_bot_reposts_nothing_and_goes_on_with_the_same_alert(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.read(700, 700)
        ts = w.message()["ts"]
        calls = len(slack.calls)
        w.restart()
        await w.read(700, 700, 700)
        assert len(slack.calls) == calls  # nothing re-posted, nothing edited
        await w.read(2500, 2500)
        assert w.message()["ts"] == ts and "*Critical*" in shown(w.message())
        assert len(w.alert_rows()) == 1

    scenario(store_url, slack, body)


def test_slack_failing_delays_the_alert_and_it_is_posted_once(
    store_url: str, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        for _ in range(3):  # the client's two retries on a server error, and its first try
            slack.fail_next("chat.postMessage", "internal_error", status=500)
        await w.read(700, 700)
        assert w.posts() == []
        (timer,) = w.store.pending_timers(SYNC_TIMER)
        assert timer.attempts == 1  # it failed and waits for its retry
        await w.later(seconds=5)
        assert len(w.posts()) == 1
        await w.later(minutes=5)
        assert len(w.posts()) == 1

    scenario(store_url, slack, body)


def test_escalate_opens_one_incident_for_the_alert(store_url: str, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        await w.read(700, 700)
        answer = await w.press("alert_escalate", "U0LEAD")
        assert "INC-" in answer and "opened" in answer
        (card,) = w.cards()
        assert "Warning alert: staging · Health check response" in shown(card)
        assert "SEV 3" in shown(card)  # staging's severity (config: environments.<env>.severity)
        again = await w.press("alert_escalate")
        assert "already open" in again
        assert len(w.cards()) == 1
        await w.read(2500, 2500)  # Critical: the alert already has its incident
        assert len(w.cards()) == 1
        # Resolved, its message has no buttons; a press from an older copy changes nothing.
        await w.read(5, 5)
        (alert,) = w.alert_rows()
        reply = await w.alerting.press("alert_escalate", str(alert.id), "U0USER")
        assert reply.answer is not None and "already resolved" in reply.answer.text
        assert len(w.cards()) == 1
        reply = await w.alerting.press("alert_ack", "not-an-id", "U0USER")
        assert reply.answer is not None and reply.answer.text == "That is not an alert."

    scenario(store_url, slack, body)


@pytest.mark.parametrize("metric", [Metric.MEMORY, Metric.BUILD_TIME])
def test_a_figure_that_cannot_be_read_is_a_warning_saying_why(
    store_url: str, slack: SlackFake, metric: Metric
) -> None:
    async def body(w: World) -> None:
        env = "ci" if metric == Metric.BUILD_TIME else "production"
        await w.read(
            None, None, problem="deploy@prod-1: connection refused", env=env, metric=metric
        )
        text = shown(w.message())
        assert "*Warning*" in text and "deploy@prod-1: connection refused" in text
        assert w.cards() == []  # a Warning pages nobody

    scenario(store_url, slack, body)
