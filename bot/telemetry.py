"""The bot's own Prometheus metrics, served at GET /metrics in every run mode.

One registry per bot instance (not prometheus_client's global one) so that several bots,
or a bot and the demo service, can live in one process — the test suite does exactly that.
"""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot import __version__


class Telemetry:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "eventmesh_bot_commands_total",
            "Slash commands and button presses handled, by name and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "eventmesh_bot_ack_seconds",
            "Time from receiving a command or button press to acknowledging it (Slack allows 3 s).",
            ["command"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
            registry=self.registry,
        )
        self.checks = Counter(
            "eventmesh_bot_health_checks_total",
            "Health checks run against EventMesh environments, by environment and result.",
            ["environment", "result"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "eventmesh_bot_job_seconds",
            "Duration of background work handed off by listeners.",
            ["command"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=self.registry,
        )
        self.check_cycles = Counter(
            "eventmesh_bot_check_cycles_total",
            "Scheduled health check cycles completed, by check_interval.",
            ["interval"],
            registry=self.registry,
        )
        self.check_cycle_seconds = Histogram(
            "eventmesh_bot_check_cycle_seconds",
            "Time from the start of a scheduled health check cycle to its last result.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.alert_changes = Counter(
            "eventmesh_bot_alert_changes_total",
            "Alert state changes (fired, raised, lowered, resolved, flapping ...), by metric.",
            ["metric", "change"],
            registry=self.registry,
        )
        self.checking_lease = Gauge(
            "eventmesh_bot_checking_lease",
            "1 while this replica holds the checking lease and so runs the scheduled checks; "
            "0 while another replica does (or scheduled checks are off).",
            registry=self.registry,
        )
        self.store_reachable = Gauge(
            "eventmesh_bot_store_reachable",
            "1 while the store (EVENTMESH_DATABASE_URL) answers, 0 while it does not "
            "(down, unreachable, its SQLite file deleted): readiness, not liveness.",
            registry=self.registry,
        )
        self.store_reachable.set(1)
        self.outbox_depth = Gauge(
            "eventmesh_bot_outbox_depth",
            "Messages waiting in the outbox for Slack to take them (pages, posts, replies).",
            registry=self.registry,
        )
        self.outbox_oldest_seconds = Gauge(
            "eventmesh_bot_outbox_oldest_seconds",
            "Age of the oldest message waiting in the outbox (0 when none waits).",
            registry=self.registry,
        )
        self.slack_reachable = Gauge(
            "eventmesh_bot_slack_reachable",
            "1 while Slack's Web API answers, 0 since it stopped (an outage).",
            registry=self.registry,
        )
        self.slack_reachable.set(1)
        self.ready = Gauge(
            "eventmesh_bot_ready",
            "1 while the bot is ready (GET /readyz 200), 0 while not: the store unreachable, or "
            "Slack (Web API, Socket Mode) out of reach for longer than slack.ready_grace.",
            registry=self.registry,
        )
        # Exposed as eventmesh_bot_build_info{version="…"} 1, the usual shape of build info.
        build = Info("eventmesh_bot_build", "The running bot's version.", registry=self.registry)
        build.info({"version": __version__})

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
