"""The composition root of the Slack side: what handlers may use, built once per process.

The CLI (bot/runtime.py) makes the parts that need the run mode (store, chat, scheduler,
workers, …); the flows that are made from them (incidents, alerts, the scheduled checks) are
put together here, so every run mode shares one wiring.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.config import Config
from bot.runbook.alerts.alerts import Alerts
from bot.runbook.alerts.monitor import Monitor
from bot.runbook.health.health import HealthChecker
from bot.runbook.health.watch import Watches
from bot.runbook.oncall.handoffs import PLAN_EVERY
from bot.runbook.retention import RETENTION_EVERY, prune_old_rows
from bot.runbook.setup.problems import SetupProblems
from bot.scheduler import Scheduler
from bot.slack.access import Policy
from bot.slack.alerts.alerting import Alerting
from bot.slack.chat import Chat
from bot.slack.durable_chat import DurableChat, PacedLanes
from bot.slack.home.home import SWEEP_EVERY as HOME_SWEEP_EVERY
from bot.slack.home.home import HomeDesk
from bot.slack.incidents.incidents import Incidents
from bot.slack.limits import EnvironmentSlots, Limits
from bot.slack.oncall.oncall import OnCallDesk
from bot.slack.outbox import Outbox
from bot.slack.setup.notice import SetupNotice
from bot.store import Store
from bot.telemetry import Telemetry
from bot.workers import WorkerPool


@dataclass
class Services:
    """What handlers may use. Built once by the CLI, shared by every run mode."""

    config: Config
    store: Store
    # The transport given (Slack's Web API, the console) — replaced, once the outbox is made
    # over it, by the durable chat every handler and flow talks to.
    chat: Chat
    health: HealthChecker
    telemetry: Telemetry
    workers: WorkerPool
    scheduler: Scheduler
    # Outbound HTTP that is not a health probe (the CI provider's API).
    http: httpx.AsyncClient
    watches: Watches = field(init=False)  # running watches, for their Stop button
    # Keep Slack's pace for alerts and incidents (the console has no rate limits to keep).
    paced: bool = True
    # The bot's own files (EVENTMESH_DATA_DIR): build workspaces, approved packages.
    data_dir: Path = Path("data")
    # Made from the ones above. Every message goes through the one outbox: incidents in its
    # page lane (ahead of routine alert posts), replies to commands through `chat`.
    outbox: Outbox = field(init=False)
    # Paced lanes over the outbox, for what posts beside alerts (a rollback's summary).
    pacer: PacedLanes = field(init=False)
    incidents: Incidents = field(init=False)
    alerts: Alerts = field(init=False)
    alerting: Alerting = field(init=False)
    monitor: Monitor = field(init=False)
    oncall: OnCallDesk = field(init=False)
    home: HomeDesk = field(init=False)
    # Who may do what (bot/slack/access.py), and the limits (bot/slack/limits.py).
    policy: Policy = field(init=False)
    limits: Limits = field(init=False)
    environment_slots: EnvironmentSlots = field(init=False)
    # Setup problems (a key file, known_hosts, a host name, a token, a request counter): one
    # message in the alerts channel, never an alert (bot/slack/setup/notice.py).
    setup: SetupProblems = field(default_factory=SetupProblems)
    setup_notice: SetupNotice = field(init=False)

    @property
    def workspaces(self) -> Path:
        """Where each deploy builds, in a workspace of its own (runbook/changes/workspace.py)."""
        return self.data_dir / "workspaces"

    @property
    def approved_packages(self) -> Path:
        """Where a package built for an approval request waits for the decision."""
        return self.data_dir / "approved"

    def __post_init__(self) -> None:
        limits = self.config.limits
        self.watches = Watches(per_user=limits.watches_per_user)
        self.limits = Limits(limits, self.store)
        self.environment_slots = EnvironmentSlots(limits.ssh_per_environment)
        self.outbox = Outbox(
            self.store,
            self.chat,  # type: ignore[arg-type]
            telemetry=self.telemetry,
            paced=self.paced,
        )
        self.chat = DurableChat(self.outbox)
        self.pacer = PacedLanes(self.outbox)
        self.incidents = Incidents(self.config, self.store, self.outbox, self.scheduler)
        self.alerts = Alerts(self.config, self.store, wake=self.scheduler.sweep_at)
        self.alerting = Alerting(self.config, self.store, self.outbox, self.alerts, self.incidents)
        self.setup_notice = SetupNotice(self.config, self.store, self.outbox, self.setup)
        self.monitor = Monitor(
            self.config, self.health, self.alerts, self.telemetry, setup=self.setup
        )
        self.oncall = OnCallDesk(self.config, self.store, self.outbox, self.scheduler)
        self.policy = Policy(self.config, self.oncall.on_call.store)
        # Each rotation's next hand-off gets its timer at start (and again hourly, in case the
        # store was down then); from there each hand-off sets the next.
        self.scheduler.every("oncall-handoffs", PLAN_EVERY, self.oncall.plan_handoffs)
        # The App Home's views are not messages: published straight through (views.publish),
        # at its own pace; its sweep picks up what another replica counted and left.
        self.home = HomeDesk(self.config, self.store, self.chat, self.oncall)
        self.scheduler.every("home-sweep", HOME_SWEEP_EVERY, self.home.sweep)
        # Timers that fired, the audit log and the events are kept config.retention (90 days).
        self.scheduler.every(
            "retention",
            RETENTION_EVERY,
            functools.partial(prune_old_rows, self.store, self.config.retention),
        )
