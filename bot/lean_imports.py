"""Imported first (bot/__init__.py): what libraries would load and the bot never uses stays
unloaded, so a bot at rest stays under 120 MiB resident.

- paramiko imports `invoke` when it is installed, only for ssh_config's `Match exec`, which
  the bot never reads (its SSH settings come from its own config): 2.5 MiB (45 modules, and
  unittest with them).
- Alembic's templates (mako) import `pygments` when it is installed, only to colour HTML error
  pages: 4.5 MiB.

Both libraries catch the ImportError and go without. Nothing here is the bot's dependency:
they are installed for the tests and tools (pytest, fabric).
"""

from __future__ import annotations

import sys

for _unused in ("invoke", "pygments"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]
