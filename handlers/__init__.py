"""Thin listeners: parse, authorize, ack, then hand the work to bot/.

Adding a command: write a module with `@command` / `@action` handlers and list them here.
"""

from bot.slack.dispatch import ActionSpec, CommandSpec
from handlers import health

COMMANDS: tuple[CommandSpec, ...] = (health.health,)
ACTIONS: tuple[ActionSpec, ...] = (health.recheck,)
