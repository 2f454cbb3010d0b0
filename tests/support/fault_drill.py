"""A fire drill through a Slack fault: real bots escalating incidents and raising an alert while
the Slack fake fails on purpose, and what reached Slack counted afterwards.

Used by tests/test_delivery_faults*.py (short outages) and benchmarks/delivery_faults.py (the
issue's 90 s). Each drill bot has people and channels of its own (a tag in every id), so two
bots on one fake never read each other's messages. What was due is read from the bot's own
store: every page is an outbox row, written when its level fell due.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bot.runbook.incidents.escalation import PAGE_DELIVERY
from bot.store import Delivery, Store
from tests.conftest import BOT_TOKEN, BotProcess, Sent, new_channel, start_slack_bot, stop_process
from tests.support.slack_fake import SlackFake

LEVEL_NAMES = ("On-call DevOps Engineer", "DevOps Team Lead", "Engineering Manager", "CTO")
UNREACHABLE = {"warning": 100.5, "critical": 101}  # this machine's CPU and memory: not tested
SETTLED_TIMEOUT_S = 150.0
LATE_WORDS = "delayed by a Slack outage"


def drill_config(
    path: Path,
    users: list[str],
    *,
    incidents_channel: str,
    alerts_channel: str,
    service_url: str | None,
    level_timeout: str,
) -> Path:
    """Four levels of one person each, `level_timeout` apart (the CTO last, repeated hourly);
    with a service_url, 'staging' checked every second, paging when it goes Critical."""
    levels: list[dict[str, Any]] = [
        {"name": name, "users": [user]} for name, user in zip(LEVEL_NAMES, users, strict=True)
    ]
    for level in levels[:-1]:
        level["timeout"] = level_timeout
    environments = (
        {"staging": {"base_url": service_url, "transport": "local", "check_interval": "1s"}}
        if service_url
        else {"local": {"base_url": "http://127.0.0.1:1", "transport": "local"}}
    )
    config = {
        "slack": {"incidents_channel": incidents_channel, "alerts_channel": alerts_channel},
        "access": {"approvers": ["U0APPROVER1"]},
        "environments": environments,
        "thresholds": {"cpu_percent": UNREACHABLE, "memory_percent": UNREACHABLE},
        "alerts": {
            "breaches_to_fire": 2,
            "passes_to_resolve": 2,
            "repeat_every": "1h",
            "page_on_critical": True,
            "scheduled_checks": service_url is not None,
        },
        "escalation": {"levels": levels},
        "metrics": {"dir": str(path.parent / "no-metrics-here")},
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class DrillBot:
    """One bot of the drill, its people and channels, and the acks it gave."""

    bot: BotProcess
    tag: str
    users: list[str]
    incidents_channel: str
    alerts_channel: str
    acks: list[float] = field(default_factory=list)
    asked_in: list[str] = field(default_factory=list)

    @property
    def slack(self) -> SlackFake:
        return self.bot.slack

    def command(self, command: str, text: str) -> Sent:
        sent = self.bot.command(command, text, user_id=self.users[0])
        assert sent.response.status_code == 200, sent.response.text
        self.acks.append(sent.seconds)
        self.asked_in.append(sent.channel)
        return sent

    def escalate(self, summary: str) -> Sent:
        return self.command("/escalate", f"{summary} --sev 1")

    # --- what the bot's store says was due ------------------------------------------------

    def _store(self) -> Store:
        return Store(self.bot.database_url)

    def page_rows(self) -> list[Delivery]:
        store = self._store()
        try:
            incidents = store.unresolved_incidents(limit=1000)
            return [
                row
                for incident in incidents
                for row in store.deliveries_of(f"INC-{incident.id}", PAGE_DELIVERY)
            ]
        finally:
            store.close()

    def waiting(self) -> int:
        store = self._store()
        try:
            return store.outbox_backlog()[0]
        finally:
            store.close()

    # --- what reached Slack -----------------------------------------------------------------

    def _keyed(self, channel: str) -> list[tuple[str, dict[str, Any]]]:
        """The bot's messages in a channel with the outbox key each carries (its metadata:
        what Slack shows, whatever edits have made of the text since)."""
        found = []
        for message in self.slack.channel_messages(channel):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if "key" in payload:
                found.append((str(payload["key"]), message))
        return found

    def pages(self) -> Counter[tuple[str, str]]:
        """Pages in the people's DMs, counted by (incident, user)."""
        seen: Counter[tuple[str, str]] = Counter()
        for user in self.users:
            for key, _ in self._keyed("D" + user[1:]):
                incident, kind, *_ = key.split("/")
                if kind == "page":
                    seen[(incident, user)] += 1
        return seen

    def page_texts(self, user: str) -> list[str]:
        """The pages' words as sent (the messages are edited later to show the incident)."""
        return [
            str(call.args.get("text", ""))
            for call in self.slack.calls_to("chat.postMessage")
            if call.args.get("channel") == "D" + user[1:]
            and call.status == 200
            and call.error is None
        ]

    def cards(self) -> Counter[str]:
        return Counter(
            key.split("/")[0]
            for key, message in self._keyed(self.incidents_channel)
            if key.endswith("/card") and "thread_ts" not in message
        )

    def thread_lines(self) -> Counter[tuple[str, str]]:
        return Counter(
            (str(m["thread_ts"]), str(m["text"]))
            for m in self.slack.channel_messages(self.incidents_channel)
            if "thread_ts" in m
        )

    def alert_posts(self) -> int:
        return sum(
            1 for m in self.slack.channel_messages(self.alerts_channel) if "thread_ts" not in m
        )

    def metric(self, name: str) -> float | None:
        """A sample of the bot's /metrics (None: not exposed)."""
        for family in text_string_to_metric_families(self.bot.metrics()):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return None

    def metrics_show(self, wanted: dict[str, Callable[[float], bool]], timeout: float) -> None:
        """Until /metrics shows what is wanted (the outbox measures itself every round)."""
        deadline = time.monotonic() + timeout
        while True:
            values = {name: self.metric(name) for name in wanted}
            if all(
                v is not None and ok(v)
                for (name, ok), v in zip(wanted.items(), values.values(), strict=True)
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"/metrics never showed it: {values}")
            time.sleep(0.2)

    def log_lines(self, words: str) -> list[str]:
        return [line for line in self.bot.log.read_text().splitlines() if words in line]

    def settle(self, timeout: float = SETTLED_TIMEOUT_S) -> None:
        """Until every page written is delivered and nothing waits in the outbox (polling
        the bot's store: a condition, not a time)."""
        deadline = time.monotonic() + timeout
        while True:
            due = {(row.subject, row.user_id) for row in self.page_rows()}
            delivered = set(self.pages())
            if due and due <= delivered and self.waiting() == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not settled in {timeout}s: {len(due - delivered)} of {len(due)} pages "
                    f"missing, {self.waiting()} waiting\n{self.bot.log.read_text()[-4000:]}"
                )
            time.sleep(0.2)


def own_slack() -> Iterator[SlackFake]:
    """A Slack fake of the test's own (its faults reach no other test's bot), for a fixture."""
    with SlackFake(bot_token=BOT_TOKEN) as running:
        yield running


def drill_bots() -> Iterator[list[DrillBot]]:
    """The drill bots a test starts, stopped at its end, for a fixture."""
    started: list[DrillBot] = []
    yield started
    for drill in started:
        drill.bot.http.close()
        stop_process(drill.bot.process)


def start_drill_bot(
    workdir: Path,
    slack: SlackFake,
    *,
    service_url: str | None = None,
    level_timeout: str = "3s",
) -> DrillBot:
    tag = uuid.uuid4().hex[:6].upper()
    users = [f"U0{role}{tag}" for role in ("ONCALL", "LEAD", "MANAGER", "CTO")]
    incidents_channel, alerts_channel = new_channel(), new_channel()
    workdir.mkdir(parents=True, exist_ok=True)
    config = drill_config(
        workdir / "eventmesh.yml",
        users,
        incidents_channel=incidents_channel,
        alerts_channel=alerts_channel,
        service_url=service_url,
        level_timeout=level_timeout,
    )
    bot = start_slack_bot(workdir, slack, config)
    return DrillBot(bot, tag, users, incidents_channel, alerts_channel)
