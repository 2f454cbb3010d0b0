"""A second request for an environment whose only finding is slowness.

A reading is the time from the request going out to the answer's headers coming back, so it
includes any wait on the checker's own side: a fan-out over 1,000 environments on 2 shared
cores read healthz at 201–383 ms for a service answering in 200 ms, and the status endpoint
over the runbook's 200 ms "API slow" for one answering in 50 ms (false Degraded in 2 of 6
reports; under heavy load, hundreds). So when a cycle's first wave is over and the checker is
quiet, an environment Degraded for slowness alone is read once more — its slow endpoints only,
the others' answers stand — and classed on that second reading; if it is still slow, its
reasons say that a second request confirmed it. HealthChecker (health.py) does the requests.

Anything else is never read twice: an error, a non-200, a service reporting itself down or
degraded stands on the first reading, and a slow reading beside one of those adds nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.runbook.health.health import Classification


def wants_second_reading(first: Classification) -> bool:
    """Degraded for slowness and nothing else: the checker's own load may be the cause."""
    return first.only_slow


def second_reading(first: Classification, second: Classification) -> Classification:
    """The class of the second reading; a slowness that both readings saw says so, with what
    the first request took ("confirmed by a second request, the first took 383 ms")."""
    before = {slow.endpoint: slow.latency_ms for slow in first.slow}
    confirmed = {
        slow.reason: f"{slow.reason}; confirmed by a second request, the first took "
        f"{before[slow.endpoint]:.0f} ms"
        for slow in second.slow
        if slow.endpoint in before
    }
    if not confirmed:
        return second
    return replace(second, reasons=tuple(confirmed.get(r, r) for r in second.reasons))
