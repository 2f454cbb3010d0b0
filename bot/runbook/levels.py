"""Normal / Warning / Critical by a row of the runbook's Key Metrics table.

The table reads "Normal <30min, Warning 30-40min, Critical >40min" (and likewise for CPU
and memory): the warning level itself is a warning, the critical level itself still one.
"""

from __future__ import annotations

from enum import StrEnum

from bot.config import Threshold


class Level(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"
    CRITICAL = "Critical"

    @property
    def rank(self) -> int:
        # A dict, not list(Level).index(self): an alert round ranks levels ~10 times per
        # reading, and building the list was half of a state step's time (cProfile).
        return _RANKS[self]


_RANKS = {level: rank for rank, level in enumerate(Level)}


def level_of(value: float, threshold: Threshold) -> Level:
    if value > threshold.critical:
        return Level.CRITICAL
    if value >= threshold.warning:
        return Level.WARNING
    return Level.NORMAL


def worst_level(*levels: Level) -> Level:
    return max(levels, key=lambda level: level.rank, default=Level.NORMAL)
