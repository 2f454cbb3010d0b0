"""The runbook's error rate: the share of 5xx answers since the last scrape of /metrics.

EventMesh counts every request it answers in `eventmesh_http_requests_total{path, code}`. Two
scrapes apart, the growth of each series is what was answered in between; the error rate is
the 5xx share of that growth. A counter that went down was reset (the service restarted): its
growth is then its whole current value, as Prometheus's `increase()` counts it.

Left out: the endpoints the scheduled check itself requests every time (healthz, the status
endpoint, metrics). On a quiet service they would be the whole sample, and the check would be
measuring itself — one injected 500 among three of its own requests reads as 33 %. With fewer
than MIN_REQUESTS other requests since the baseline there is no rate yet (a 1-in-5 blip is not
a 20 % error rate): the baseline is kept and the next scrape measures a longer span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

COUNTER = "eventmesh_http_requests_total"
# The scheduled check's own requests (bot/runbook/health.py), as the service labels them.
CHECK_PATHS = frozenset({"/healthz", "/api/v1/status", "/metrics"})
MIN_REQUESTS = 20

# A sample line of the counter: name{labels} value [timestamp]
_SAMPLE = re.compile(rf"^{COUNTER}\{{([^}}]*)\}}[ \t]+(\S+)", re.MULTILINE)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Counters = Mapping[tuple[str, str], float]  # (path, code) -> requests answered so far


def request_counters(metrics_text: str) -> dict[tuple[str, str], float] | None:
    """Each (path, code) series of the request counter in a scrape; None if there is none.

    A line scan rather than a full Prometheus parse: it runs for every environment of every
    scheduled check, on the probe thread, and only this one family matters here.
    """
    counters: dict[tuple[str, str], float] = {}
    for labels_text, value_text in _SAMPLE.findall(metrics_text):
        labels = dict(_LABEL.findall(labels_text))
        try:
            value = float(value_text)
        except ValueError:
            continue
        key = (labels.get("path", ""), labels.get("code", ""))
        counters[key] = counters.get(key, 0.0) + value
    return counters or None


@dataclass(frozen=True)
class ErrorRate:
    """What one scrape says against the baseline: a rate, or not enough traffic for one."""

    errors: int
    requests: int
    percent: float | None  # None: fewer than MIN_REQUESTS requests since the baseline
    reset: bool  # a counter went down: the service restarted since the baseline

    @property
    def measured(self) -> bool:
        return self.percent is not None


def error_rate(baseline: Counters, current: Counters) -> ErrorRate:
    """The 5xx share of the requests answered between two scrapes (check paths left out)."""
    requests = errors = 0.0
    reset = False
    for (path, code), value in current.items():
        before = baseline.get((path, code), 0.0)
        grown = value - before
        if grown < 0:
            reset, grown = True, value
        if path in CHECK_PATHS:
            continue
        requests += grown
        if code.startswith("5"):
            errors += grown
    counted = round(requests)
    percent = errors / requests * 100 if counted >= MIN_REQUESTS else None
    return ErrorRate(round(errors), counted, percent, reset)
