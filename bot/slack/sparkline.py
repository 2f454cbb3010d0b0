"""Sparklines: a series of numbers as one line of block characters, for any message.

Used by the health watch for latencies; anything that shows a short history (a scheduled
alert's last readings, say) can use it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"
GAP = "·"  # a reading with no value (no answer): visible, and unlike any bar


def sparkline(
    values: Sequence[float | None],
    *,
    width: int | None = None,
    low: float | None = None,
    high: float | None = None,
) -> str:
    """One character per value: the lowest bar for `low`, the highest for `high`.

    `low` and `high` default to the smallest and largest value shown, so the line uses its
    whole height; give them to compare lines with each other. None shows as a gap. With
    `width`, only the last `width` values are drawn (the most recent history).
    """
    if width is not None:
        values = values[-width:] if width > 0 else []
    present = [v for v in values if v is not None]
    if not present:
        return GAP * len(values)
    bottom = min(present) if low is None else low
    top = max(present) if high is None else high
    span = top - bottom
    line = []
    for value in values:
        if value is None:
            line.append(GAP)
        elif span <= 0:
            line.append(BARS[0])  # a flat series: every value the same
        else:
            share = min(1.0, max(0.0, (value - bottom) / span))
            line.append(BARS[round(share * (len(BARS) - 1))])
    return "".join(line)
