"""Persistence: what must outlive a restart, behind SQLAlchemy.

SQLite by default (a file under EVENTMESH_DATA_DIR); any SQLAlchemy URL works, and the test
suite runs the same tests on PostgreSQL. The methods are synchronous and short: callers on
the event loop run them with `asyncio.to_thread` so a slow disk never delays an ack.

One module per concern, each with its records (tables), the values it hands back and a mixin
of Store's methods: audit, health, timers, incidents, deployments (with environment locks),
approvals, alerts, Slack names, the outbox (every message on its way to Slack, and posting
leases) and leases (one replica at a time); base holds the engine, the sessions and
StoreError; schema the migrations that make the tables. Import from here.
"""

from __future__ import annotations

# On-call's tables (bot/store/oncall.py, not a Store mixin yet) belong to the schema too: the
# migrations are compared with the models that every `import bot.store` registers.
from bot.store import home as _home  # noqa: F401
from bot.store import oncall as _oncall  # noqa: F401
from bot.store.alerts import (
    ALERT_FIELDS,
    Alert,
    AlertEvent,
    AlertEventRecord,
    AlertRecord,
    AlertSilence,
    AlertSilenceRecord,
    AlertStateRecord,
    AlertStateRow,
    AlertStore,
    AlertWrite,
    NewAlertEvent,
    StaleAlertStates,
)
from bot.store.approvals import Approval, ApprovalRecord, ApprovalStore
from bot.store.audit import AuditEntry, AuditRecord, AuditStore
from bot.store.base import MAX_AUDIT_TEXT, Base, StoreError, default_database_url
from bot.store.deployments import (
    FINISHED_STATES,
    MAX_STEP_OUTPUT,
    RUNNING,
    AlreadyStarted,
    Deployment,
    DeploymentRecord,
    DeploymentStep,
    DeploymentStepRecord,
    DeploymentStore,
    EnvironmentLock,
    EnvironmentLockRecord,
    LockHeld,
)
from bot.store.health import HealthCheck, HealthCheckRecord, HealthStore, HealthStreakRecord
from bot.store.incidents import (
    INCIDENT_STATE_FIELDS,
    Incident,
    IncidentEvent,
    IncidentEventRecord,
    IncidentMessage,
    IncidentMessageRecord,
    IncidentRecord,
    IncidentStore,
    NewEvent,
)
from bot.store.leases import Fence, Lease, LeaseLost, LeaseRecord, LeaseStore
from bot.store.names import NameStore, SlackNameRecord
from bot.store.outbox import (
    LANE_PAGE,
    LANE_REPLY,
    LANE_ROUTINE,
    Delivery,
    NewDelivery,
    OutboxRecord,
    OutboxStore,
    PostingLeaseRecord,
)
from bot.store.retention import RetentionStore
from bot.store.timers import NewTimer, Timer, TimerRecord, TimerStore


class Store(
    AuditStore,
    HealthStore,
    TimerStore,
    IncidentStore,
    DeploymentStore,
    ApprovalStore,
    AlertStore,
    LeaseStore,
    NameStore,
    OutboxStore,
    RetentionStore,
):
    """The bot's database: every concern's methods over one engine (see the modules)."""


__all__ = [
    "ALERT_FIELDS",
    "FINISHED_STATES",
    "INCIDENT_STATE_FIELDS",
    "LANE_PAGE",
    "LANE_REPLY",
    "LANE_ROUTINE",
    "MAX_AUDIT_TEXT",
    "MAX_STEP_OUTPUT",
    "RUNNING",
    "Alert",
    "AlertEvent",
    "AlertEventRecord",
    "AlertRecord",
    "AlertSilence",
    "AlertSilenceRecord",
    "AlertStateRecord",
    "AlertStateRow",
    "AlertWrite",
    "AlreadyStarted",
    "Approval",
    "ApprovalRecord",
    "AuditEntry",
    "AuditRecord",
    "Base",
    "Delivery",
    "Deployment",
    "DeploymentRecord",
    "DeploymentStep",
    "DeploymentStepRecord",
    "EnvironmentLock",
    "EnvironmentLockRecord",
    "Fence",
    "HealthCheck",
    "HealthCheckRecord",
    "HealthStreakRecord",
    "Incident",
    "IncidentEvent",
    "IncidentEventRecord",
    "IncidentMessage",
    "IncidentMessageRecord",
    "IncidentRecord",
    "Lease",
    "LeaseLost",
    "LeaseRecord",
    "LockHeld",
    "NewAlertEvent",
    "NewDelivery",
    "NewEvent",
    "NewTimer",
    "OutboxRecord",
    "PostingLeaseRecord",
    "SlackNameRecord",
    "StaleAlertStates",
    "Store",
    "StoreError",
    "Timer",
    "TimerRecord",
    "default_database_url",
]
