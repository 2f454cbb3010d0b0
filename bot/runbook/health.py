"""The runbook's health check: healthz, the status endpoint and metrics, classified.

Classification follows RUNBOOK.md "Service Health Indicators" with the thresholds from the
config's Key Metrics table:

- Unhealthy: no answer within the critical threshold (timeout, refused, unresolvable),
  5xx or any non-200 on /healthz, a body that is not the expected JSON, the service saying
  it is unhealthy, or a critical component down.
- Degraded: 200 but slow (healthz at or over the warning threshold, the API over its own),
  the service saying it is degraded, a non-critical component down, or the status or
  metrics endpoint unavailable.
- Healthy: everything else.

This module knows nothing about Slack: it returns results, and the caller renders them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.clock import Clock, utc_now
from bot.config import Environment, Thresholds
from bot.store import Store, StoreError
from bot.telemetry import Telemetry

log = logging.getLogger(__name__)


class Health(StrEnum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"

    @property
    def rank(self) -> int:
        return list(Health).index(self)


def worst(*values: Health) -> Health:
    return max(values, key=lambda h: h.rank, default=Health.HEALTHY)


@dataclass(frozen=True)
class Probe:
    """One HTTP GET as the check saw it: either an answer or the reason there was none."""

    url: str
    status_code: int | None = None
    latency_ms: float | None = None
    body: str = ""
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.error is None and self.status_code is not None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class HealthResult:
    environment: str
    health: Health
    checked_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    version: str | None = None
    reasons: tuple[str, ...] = ()
    components: Mapping[str, str] = field(default_factory=dict)
    metrics_available: bool = False
    # How many checks in a row, this one included, had this same result (from the store).
    streak: int = 1


@dataclass(frozen=True)
class Classification:
    health: Health
    reasons: tuple[str, ...]
    version: str | None
    components: Mapping[str, str]
    metrics_available: bool


def _describe_failure(name: str, probe: Probe) -> str:
    if probe.error is not None:
        return f"{name}: {probe.error}"
    return f"{name} answered HTTP {probe.status_code}"


def classify(
    healthz: Probe, status: Probe, metrics: Probe, thresholds: Thresholds
) -> Classification:
    """Apply the runbook's rules to the three probes of one environment."""
    findings: list[tuple[Health, str]] = []
    version: str | None = None
    components: dict[str, str] = {}

    # /healthz decides whether the service is up at all.
    if not healthz.answered or healthz.status_code != 200:
        findings.append((Health.UNHEALTHY, _describe_failure("healthz", healthz)))
    else:
        try:
            payload = healthz.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            findings.append((Health.UNHEALTHY, "healthz did not return a JSON object"))
        else:
            version = str(payload["version"]) if payload.get("version") is not None else None
            reported = str(payload.get("status", "")).lower()
            if reported == "degraded":
                findings.append((Health.DEGRADED, "service reports itself degraded"))
            elif reported != "healthy":
                findings.append(
                    (Health.UNHEALTHY, f"service reports status '{reported or 'missing'}'")
                )
        warning_ms = thresholds.health_response_ms.warning
        if healthz.latency_ms is not None and healthz.latency_ms >= warning_ms:
            findings.append(
                (
                    Health.DEGRADED,
                    f"healthz slow: {healthz.latency_ms:.0f} ms (warning at {warning_ms:.0f} ms)",
                )
            )

    # /api/v1/status gives the dependencies; losing it hides them, which degrades the picture.
    if _same_outage(status, healthz):
        pass  # the host is unreachable: healthz already said so, once is enough
    elif not status.answered or status.status_code != 200:
        findings.append((Health.DEGRADED, _describe_failure("status endpoint", status)))
    else:
        try:
            payload = status.json()
        except ValueError:
            payload = None
        raw_components = payload.get("components") if isinstance(payload, dict) else None
        if not isinstance(raw_components, dict):
            findings.append((Health.DEGRADED, "status endpoint did not list components"))
        else:
            for name, detail in raw_components.items():
                state = detail.get("status") if isinstance(detail, dict) else detail
                critical = bool(detail.get("critical")) if isinstance(detail, dict) else False
                components[str(name)] = str(state)
                if str(state).lower() not in ("up", "ok", "healthy"):
                    if critical:
                        findings.append((Health.UNHEALTHY, f"critical component {name} is {state}"))
                    else:
                        findings.append((Health.DEGRADED, f"component {name} is {state}"))
        api_warning = thresholds.api_response_ms.warning
        if status.latency_ms is not None and status.latency_ms >= api_warning:
            findings.append(
                (
                    Health.DEGRADED,
                    f"API slow: {status.latency_ms:.0f} ms (warning at {api_warning:.0f} ms)",
                )
            )

    metrics_available = metrics.answered and metrics.status_code == 200 and _parses(metrics.body)
    if not metrics_available and not _same_outage(metrics, healthz):
        if metrics.answered and metrics.status_code == 200:
            findings.append((Health.DEGRADED, "metrics endpoint returned no Prometheus metrics"))
        else:
            findings.append((Health.DEGRADED, _describe_failure("metrics endpoint", metrics)))

    health = worst(*(h for h, _ in findings))
    # Lead with what made it this bad: the first thing an on-call engineer should read.
    reasons = tuple(r for h, r in findings if h == health) + tuple(
        r for h, r in findings if h != health
    )
    return Classification(health, reasons, version, components, metrics_available)


def _same_outage(probe: Probe, healthz: Probe) -> bool:
    return probe.error is not None and probe.error == healthz.error


def _parses(text: str) -> bool:
    try:
        return any(True for _ in text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError):
        return False


async def probe(http: httpx.AsyncClient, url: str, timeout_s: float) -> Probe:
    """GET url, bounded by timeout_s in total — connect, DNS and read included."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.get(url)
    except (TimeoutError, httpx.TimeoutException):
        return Probe(url, error=f"no answer within {timeout_s * 1000:.0f} ms")
    except httpx.ConnectError as exc:
        return Probe(url, error=_connect_error(exc))
    except httpx.HTTPError as exc:
        return Probe(url, error=f"request failed: {type(exc).__name__}")
    latency_ms = (time.perf_counter() - started) * 1000
    return Probe(url, status_code=response.status_code, latency_ms=latency_ms, body=response.text)


def _connect_error(exc: httpx.ConnectError) -> str:
    """Name the cause an engineer acts on; httpx's own text is often just 'connect failed'."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name does not resolve"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect: {cause.strerror.lower()}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if "name or service not known" in text or "temporary failure in name resolution" in text:
        return "host name does not resolve"
    return "cannot connect"


class HealthChecker:
    """Checks environments and keeps the history that gives consecutive-failure counts."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        thresholds: Thresholds,
        store: Store,
        telemetry: Telemetry,
        clock: Clock = utc_now,
    ) -> None:
        self.http = http
        self.thresholds = thresholds
        self.store = store
        self.telemetry = telemetry
        self.clock = clock

    @property
    def timeout_s(self) -> float:
        # A dead host costs at most the critical threshold, never a TCP timeout.
        return self.thresholds.health_response_ms.critical / 1000

    async def check(self, env: Environment) -> HealthResult:
        checked_at = self.clock()
        healthz, status, metrics = await asyncio.gather(
            probe(self.http, env.healthz_url, self.timeout_s),
            probe(self.http, env.status_url, self.timeout_s),
            probe(self.http, env.metrics_url, self.timeout_s),
        )
        verdict = classify(healthz, status, metrics, self.thresholds)
        result = HealthResult(
            environment=env.name,
            health=verdict.health,
            checked_at=checked_at,
            status_code=healthz.status_code,
            latency_ms=healthz.latency_ms,
            version=verdict.version,
            reasons=verdict.reasons,
            components=verdict.components,
            metrics_available=verdict.metrics_available,
        )
        self.telemetry.checks.labels(environment=env.name, result=result.health.value).inc()
        try:
            streak = await asyncio.to_thread(self._remember, result)
        except StoreError as exc:
            # The check itself is what the engineer needs; the history can miss one entry.
            log.error("health of %s not recorded (%s) — check the database", env.name, exc)
            return result
        return replace(result, streak=streak)

    def _remember(self, result: HealthResult) -> int:
        self.store.record_health_check(
            environment=result.environment,
            health=result.health.value,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            version=result.version,
            reason="; ".join(result.reasons),
            checked_at=result.checked_at,
        )
        return self.store.consecutive_results(result.environment, result.health.value)

    async def check_many(self, envs: Sequence[Environment]) -> AsyncIterator[HealthResult]:
        """Check every environment at once; yield each result as it arrives.

        The whole takes as long as the slowest environment, not the sum.
        """
        for finished in asyncio.as_completed([self.check(env) for env in envs]):
            yield await finished
