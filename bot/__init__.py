"""EventMesh ChatOps bot."""

import bot.lean_imports  # noqa: F401  (first: before any library is imported)

__version__ = "0.1.0"
