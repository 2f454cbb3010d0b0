"""Imported first (bot/__init__.py): what libraries would load and the bot never uses stays
unloaded, so a bot at rest stays under 120 MiB resident.

- paramiko imports `invoke` when it is installed, only for ssh_config's `Match exec`, which
  the bot never reads (its SSH settings come from its own config): 2.5 MiB (45 modules, and
  unittest with them).
- Alembic's templates (mako) import `pygments` when it is installed, only to colour HTML error
  pages: 4.5 MiB. Only in the bot's own process (`python -m bot.cli`, `eventmesh-bot`): pytest,
  which the tests and benchmarks import after the bot, needs it.

Both libraries catch the ImportError and go without. Neither is the bot's dependency: they
come with the tools (pytest, fabric).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _the_bot_process() -> bool:
    argv = getattr(sys, "orig_argv", [])
    return "bot.cli" in argv or any(Path(arg).name == "eventmesh-bot" for arg in argv[1:2])


for _unused in ("invoke", "pygments") if _the_bot_process() else ("invoke",):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]
