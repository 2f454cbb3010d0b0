"""Time as a dependency: everything that reads the clock takes one, so tests can set it."""

import math
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock: timezone-aware UTC, the only kind of datetime the bot stores."""
    return datetime.now(UTC)


def next_beat(every_s: float, after_s: float) -> float:
    """The first whole multiple of every_s since the epoch at least half of every_s after
    after_s (both in seconds since the epoch).

    Periodic work on these beats falls due together with all other work whose period divides
    or is divided by its own (every 15 s, 5 s, 2.5 s): an idle process then wakes once for all
    of it, not once each. After an off-beat start the first beat comes between half and one
    and a half periods later; from then on exactly every period.
    """
    return math.ceil((after_s + every_s / 2) / every_s) * every_s
