"""Imported before paramiko: what it would load and the bot never uses stays unloaded.

paramiko imports `invoke` when it is installed, only for ssh_config's `Match exec`, which the
bot never reads (its SSH settings come from its own config): without it the bot's resident
size is 2.5 MiB smaller (45 modules, and unittest with them).
"""

from __future__ import annotations

import sys

sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]  # paramiko: ImportError, fine
