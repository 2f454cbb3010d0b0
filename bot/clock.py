"""Time as a dependency: everything that reads the clock takes one, so tests can set it."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock: timezone-aware UTC, the only kind of datetime the bot stores."""
    return datetime.now(UTC)
