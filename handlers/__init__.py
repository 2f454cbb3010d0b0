"""Thin listeners: parse, authorize, ack, then hand the work to bot/.

Adding a command: write a module with `@command` / `@action` handlers and list them here;
`@timer` handlers run when a durable timer of their kind falls due (bot/scheduler.py), and
`@event` handlers when Slack sends an event of their type (the manifest subscribes to it).
"""

from bot.slack.dispatch import ActionSpec, CommandSpec, EventSpec, TimerSpec
from handlers import (
    alerts,
    approval,
    checklists,
    deploy,
    escalate,
    health,
    home,
    oncall,
    rollback,
)

COMMANDS: tuple[CommandSpec, ...] = (
    health.health,
    deploy.deploy,
    rollback.rollback,
    escalate.escalate,
    oncall.oncall,
)
ACTIONS: tuple[ActionSpec, ...] = (
    health.recheck,
    health.stop_watch,
    health.diagnosis_logs,
    health.diagnosis_roll_back,
    health.diagnosis_restart,
    deploy.cancel,
    deploy.roll_back,
    deploy.unlock_confirm,
    deploy.unlock_force,
    approval.approve,
    approval.reject,
    escalate.acknowledge,
    escalate.escalate_now,
    escalate.resolve,
    escalate.still_working,
    checklists.runbook,
    checklists.post_checklist,
    checklists.tick,
    checklists.backups,
    checklists.restore,
    checklists.rollback,
    checklists.health,
    checklists.diagnose_step,
    checklists.logs_step,
    alerts.acknowledge,
    alerts.silence,
    alerts.escalate,
)
TIMERS: tuple[TimerSpec, ...] = (
    deploy.aftercare_check,
    deploy.remind,
    approval.expire,
    escalate.deadline,
    escalate.sync,
    alerts.sync,
    alerts.remind,
    alerts.unsilence,
    oncall.handoff,
)
EVENTS: tuple[EventSpec, ...] = (home.home_opened,)
