"""The runbook's error rate: the share of 5xx answers since the last scrape of /metrics.

A service counts the requests it answers in a Prometheus counter labelled with the status
(and usually the path). Which counter depends on what the service is built with, so it is
found by itself among the usual conventions (CONVENTIONS: EventMesh's own, the Prometheus
client libraries' `http_requests_total`, Micrometer's, OpenTelemetry's), or named in the
config (`metrics.requests_counter`, `metrics.status_label`). Two scrapes apart, the growth of
each series is what was answered in between; the error rate is the 5xx share of that growth.
A counter that went down was reset (the service restarted): its growth is then its whole
current value, as Prometheus's `increase()` counts it.

Left out: the endpoints the scheduled check itself requests every time (healthz, the status
endpoint, metrics) and the config's `metrics.exclude_paths`. On a quiet service the check's
own requests would be the whole sample, and the check would be measuring itself — one
injected 500 among three of its own requests reads as 33 %. With fewer than MIN_REQUESTS
other requests since the baseline there is no rate yet (a 1-in-5 blip is not a 20 % error
rate): the baseline is kept and the next scrape measures a longer span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from bot.config import MetricsSettings

# The scheduled check's own requests (bot/runbook/health/health.py), as services label them.
CHECK_PATHS = frozenset({"/healthz", "/api/v1/status", "/metrics"})
MIN_REQUESTS = 20

STATUS_LABELS = ("code", "status", "status_code", "http_response_status_code")
PATH_LABELS = ("path", "handler", "route", "uri", "http_route", "endpoint")


@dataclass(frozen=True)
class Convention:
    """A request counter as some framework exposes it: the sample name and its labels."""

    counter: str
    status_labels: tuple[str, ...]
    path_labels: tuple[str, ...]


# Tried in this order; the first present with a status label is the one read.
CONVENTIONS = (
    Convention("eventmesh_http_requests_total", ("code",), ("path",)),
    Convention("http_requests_total", ("code", "status", "status_code"), PATH_LABELS),
    # Micrometer (Spring Boot): a timer, whose _count is the requests answered.
    Convention("http_server_requests_seconds_count", ("status",), ("uri",)),
    # OpenTelemetry's HTTP semantic conventions, through its Prometheus exporter.
    Convention(
        "http_server_request_duration_seconds_count",
        ("http_response_status_code",),
        ("http_route",),
    ),
)

# A sample line: name{labels} value [timestamp]. A label value may hold '}' ("/users/{id}",
# as Micrometer writes URI templates), so the braces are matched around quoted values. Lines
# are found by the newline before them (the scrape is read with one put in front): a literal
# first character lets the regex engine skip to each line instead of trying every position,
# three times faster than `^` in MULTILINE mode on the probe loop, which scrapes hundreds.
_SAMPLE = r'\n({names})\{{((?:[^"}}]|"(?:[^"\\]|\\.)*")*)\}}[ \t]+(\S+)'
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Counters = Mapping[tuple[str, str], float]  # (path, status) -> requests answered so far


@dataclass(frozen=True)
class RequestCounts:
    """The request counter found in one scrape, and its series with the left-out paths gone."""

    counter: str
    status_label: str
    path_label: str | None  # None: the counter has no path label; nothing can be left out
    series: dict[tuple[str, str], float]

    def describe(self) -> str:
        """'http_requests_total (status in code, path in handler)', for people."""
        path = f", path in {self.path_label}" if self.path_label else ", no path label"
        return f"{self.counter} (status in {self.status_label}{path})"


class RequestCounter:
    """Reads the request counts out of a scrape: the configured counter, or the first of
    CONVENTIONS the service exposes. Built once; `read` runs for every scrape, on the probe
    thread, so it is a scan of the few sample lines that matter rather than a full parse.
    """

    def __init__(
        self,
        counter: str | None = None,
        status_label: str | None = None,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.configured = counter
        self.status_label = status_label
        self.excluded = CHECK_PATHS | frozenset(exclude_paths)
        conventions = CONVENTIONS
        if counter is not None:
            # As written, or the sample name of a counter (_total) or of a timer (_count).
            names = dict.fromkeys((counter, f"{counter}_total", f"{counter}_count"))
            conventions = tuple(Convention(name, STATUS_LABELS, PATH_LABELS) for name in names)
        if status_label is not None:
            conventions = tuple(replace(c, status_labels=(status_label,)) for c in conventions)
        self.conventions = conventions
        alternatives = "|".join(re.escape(c.counter) for c in conventions)
        self._sample = re.compile(_SAMPLE.format(names=alternatives))

    @classmethod
    def of(cls, settings: MetricsSettings) -> RequestCounter:
        return cls(settings.requests_counter, settings.status_label, settings.exclude_paths)

    def read(self, metrics_text: str) -> RequestCounts | str:
        """The request counts of a scrape, or one line saying why there are none."""
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for name, labels_text, value_text in self._sample.findall("\n" + metrics_text):
            try:
                value = float(value_text)
            except ValueError:
                continue
            samples.setdefault(name, []).append((dict(_LABEL.findall(labels_text)), value))
        for convention in self.conventions:
            found = samples.get(convention.counter)
            if found:
                counts = self._counts(convention, found)
                if counts is not None:
                    return counts
        return self._missing(samples)

    def _counts(
        self, convention: Convention, samples: list[tuple[dict[str, str], float]]
    ) -> RequestCounts | None:
        labels = set().union(*(sample_labels for sample_labels, _ in samples))
        status = next((name for name in convention.status_labels if name in labels), None)
        if status is None:
            return None
        path = next((name for name in convention.path_labels if name in labels), None)
        series: dict[tuple[str, str], float] = {}
        for sample_labels, value in samples:
            where = sample_labels.get(path, "") if path else ""
            if where in self.excluded:
                continue
            key = (where, sample_labels.get(status, ""))
            series[key] = series.get(key, 0.0) + value
        return RequestCounts(convention.counter, status, path, series)

    def _missing(self, samples: Mapping[str, object]) -> str:
        if samples:  # the counter is there, but not one of its status labels
            counter = next(iter(samples))
            if self.status_label:
                return (
                    f"/metrics has {counter} but no label {self.status_label} "
                    "(metrics.status_label)"
                )
            return (
                f"/metrics has {counter} but no status label ({', '.join(STATUS_LABELS)}); "
                "name it in metrics.status_label"
            )
        if self.configured:
            return f"/metrics has no {self.configured} (metrics.requests_counter)"
        looked_for = ", ".join(c.counter for c in CONVENTIONS)
        return (
            f"/metrics has no request counter (looked for {looked_for}); "
            "name the service's in metrics.requests_counter"
        )


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
    """The 5xx share of the requests answered between two scrapes of the same counter."""
    requests = errors = 0.0
    reset = False
    for (path, status), value in current.items():
        grown = value - baseline.get((path, status), 0.0)
        if grown < 0:
            reset, grown = True, value
        requests += grown
        if status.startswith("5"):
            errors += grown
    counted = round(requests)
    percent = errors / requests * 100 if counted >= MIN_REQUESTS else None
    return ErrorRate(round(errors), counted, percent, reset)
