"""A fleet of environments for /health at scale: a few demo services behind 200 names.

Shared by tests/test_health_fleet.py and benchmarks/health_fanout.py. Every environment gets
healthz in HEALTHZ_MS and the status and metrics endpoints in OTHER_MS, so a correct check
reports each one Healthy at about HEALTHZ_MS, however many are checked at once.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    BotProcess,
    DemoService,
    Sent,
    start_bot,
    start_demo,
    stop_process,
    write_config,
)
from tests.support.health_reports import final_report
from tests.support.slack_fake import SlackFake

FLEET_SIZE = 200
SERVICES = 4
HEALTHZ_MS = 200
OTHER_MS = 50
# "*env001* — Healthy · 201 ms · v0.1.0"
REPORT_LINE = re.compile(
    r"\*(env\d{3,4})\* — (Healthy|Degraded|Unhealthy) · (?:(\d+) ms|no answer)"
)


def env_names(count: int = FLEET_SIZE) -> list[str]:
    """env001 … env200: valid environment names (a letter first, lowercase)."""
    return [f"env{i:03d}" for i in range(1, count + 1)]


def start_services(
    tmp: Path, count: int = SERVICES, healthz_ms: int = HEALTHZ_MS, other_ms: int = OTHER_MS
) -> list[DemoService]:
    services = []
    try:
        for i in range(count):
            service = start_demo(tmp, f"fleet-{i}")
            services.append(service)
            service.set_faults(latency_ms=other_ms, path_latency_ms={"/healthz": healthz_ms})
    except BaseException:
        for service in services:
            stop_process(service.process)
        raise
    return services


def fleet_config(
    path: Path,
    services: Sequence[DemoService],
    size: int = FLEET_SIZE,
    api_warning_ms: int | None = None,
) -> Path:
    """size environments, spread round-robin over the services (env i on service i % n).

    api_warning_ms overrides the runbook's 200 ms "API slow" threshold.
    """
    names = env_names(size)
    write_config(path, {n: services[i % len(services)].url for i, n in enumerate(names)})
    if api_warning_ms is not None:
        config = json.loads(path.read_text())
        config["thresholds"] = {"api_response_ms": {"warning": api_warning_ms, "critical": 2000}}
        path.write_text(json.dumps(config, indent=2))
    return path


def service_of(name: str, services: Sequence[DemoService]) -> DemoService:
    """The service an environment of fleet_config points at."""
    return services[(int(name.removeprefix("env")) - 1) % len(services)]


def start_fleet_bot(workdir: Path, slack: SlackFake, config: Path) -> BotProcess:
    """The real bot in HTTP mode against the fleet's config."""
    database_url = f"sqlite:///{workdir / 'bot.db'}"
    process, url, log = start_bot(
        workdir,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(config),
        EVENTMESH_DATABASE_URL=database_url,
    )
    return BotProcess(url, process, log, database_url, slack)


def latencies(report: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    """Each environment's class and reported healthz latency, read off the report's sections."""
    found: dict[str, tuple[str, int | None]] = {}
    for block in report.get("blocks") or []:
        if block.get("type") == "section":
            for name, health, ms in REPORT_LINE.findall(block["text"]["text"]):
                found[name] = (health, int(ms) if ms else None)
    return found


@dataclass(frozen=True)
class Target:
    """Something to send during a burst: a command for env, or a press of the report in channel."""

    env: str
    channel: str | None = None
    message_ts: str | None = None


@dataclass(frozen=True)
class Acked:
    target: Target
    sent: Sent
    done_at: float  # time.monotonic() when the response was complete: compare with fake calls


def burst(bot: BotProcess, targets: Sequence[Target]) -> list[Acked]:
    """Send every target at once (/health <env>, or Check again on a report); time each ack."""

    def send(target: Target) -> Acked:
        if target.message_ts is None:
            sent = bot.command("/health", target.env)
        else:
            assert target.channel is not None
            sent = bot.press(
                "health_recheck", target.env, channel=target.channel, message_ts=target.message_ts
            )
        return Acked(target, sent, time.monotonic())

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return list(pool.map(send, targets))


def work_done(slack: SlackFake, acked: Sequence[Acked], updates_before: int) -> None:
    """Wait until each command's report is complete and each press has re-checked its message.

    updates_before: how many chat.update calls there were before the burst.
    """
    for a in acked:
        if a.target.message_ts is None:
            final_report(slack, a.sent.channel)
    pressed = {(a.target.channel, a.target.message_ts) for a in acked if a.target.message_ts}

    def rechecked(fake: SlackFake) -> bool:
        finished = {
            (u.args["channel"], u.args["ts"])
            for u in fake.calls_to("chat.update")[updates_before:]
            if any(b.get("type") == "actions" for b in u.args.get("blocks") or [])
        }
        return pressed <= finished

    slack.wait_for(rechecked, timeout=30)


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
