"""Thin listeners: parse, authorize, ack, then hand the work to bot/.

Adding a command: write a module with `@command` / `@action` handlers and list them here;
`@timer` handlers run when a durable timer of their kind falls due (bot/scheduler.py).
"""

from bot.slack.dispatch import ActionSpec, CommandSpec, TimerSpec
from handlers import approval, deploy, health

COMMANDS: tuple[CommandSpec, ...] = (health.health, deploy.deploy)
ACTIONS: tuple[ActionSpec, ...] = (
    health.recheck,
    deploy.cancel,
    deploy.roll_back,
    deploy.unlock_confirm,
    approval.approve,
    approval.reject,
)
TIMERS: tuple[TimerSpec, ...] = (deploy.watch, deploy.remind, approval.expire)
