"""Scheduled checks at fleet scale: 200 environments every 2 s, all classed Healthy every cycle,
and /health commands acked during the cycles as fast as between them.

Four demo services stand behind the 200 names; healthz answers in 800 ms, so a cycle is in
flight a good part of each interval. Which acks came during a cycle is read off the services'
own request logs (a cycle is 50 healthz requests to each service at once), and ack times are
compared with those between cycles, in the same run: no stopwatch bound.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DemoService, new_channel, start_slack_bot, stop_process
from tests.support.alerts import alert_posts, alerts_config
from tests.support.fleet import FLEET_SIZE, env_names, percentile, start_services
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.slack_fake import SlackFake

# Compares timings in one run: alone, after the parallel run (scripts/test).
pytestmark = pytest.mark.serial

HEALTHZ_MS = 800
INTERVAL = "2s"
COMMANDED = env_names()[:10]  # /health is sent for these; the other 190 only see the cycles
RUN_S = 8.0  # about four cycles
CYCLE_REQUESTS = 40  # of a service's 50 healthz requests per cycle, at least this many together


@dataclass(frozen=True)
class Ack:
    sent: float  # time.time(), comparable with the services' request logs
    done: float
    seconds: float
    status: int


def cycle_windows(services: list[DemoService]) -> list[tuple[float, float]]:
    """When the scheduled cycles were in flight: runs of healthz requests that started together."""
    windows = []
    for service in services:
        healthz = sorted(
            (r for r in service.requests() if r["path"] == "/healthz"), key=lambda r: r["started"]
        )
        group: list[dict[str, float]] = []
        for request in [*healthz, None]:
            if request is not None and group and request["started"] - group[0]["started"] < 0.5:
                group.append(request)
                continue
            if len(group) >= CYCLE_REQUESTS:
                windows.append((group[0]["started"], max(r["finished"] for r in group)))
            group = [request] if request is not None else []
    return windows


def checks_by_result(metrics: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["environment"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "eventmesh_bot_health_checks_total"
    }


def test_two_hundred_environments_every_two_seconds_all_healthy_and_acks_unaffected(
    tmp_path: Path, slack: SlackFake
) -> None:
    services = start_services(tmp_path, healthz_ms=HEALTHZ_MS)
    try:
        names = env_names()
        alerts = new_channel()
        config = alerts_config(
            tmp_path / "eventmesh.yml",
            {name: services[i % len(services)].url for i, name in enumerate(names)},
            alerts_channel=alerts,
            incidents_channel=new_channel(),
            check_interval=INTERVAL,
            # healthz's 800 ms is these services' normal; the API's 50 ms under load is too.
            thresholds={
                "health_response_ms": {"warning": 1500, "critical": 3000},
                "api_response_ms": {"warning": 400, "critical": 2000},
            },
        )
        bot = start_slack_bot(tmp_path, slack, config)
        try:
            acks = _commands_for(bot, RUN_S)
            metrics = bot.metrics()
            windows = cycle_windows(services)
        finally:
            bot.http.close()
            assert stop_process(bot.process) == 0, bot.log.read_text()
    finally:
        for service in services:
            stop_process(service.process)

    # Every cycle classed every environment Healthy.
    checks = checks_by_result(metrics)
    assert {result for _, result in checks} == {"Healthy"}, {
        k: v for k, v in checks.items() if k[1] != "Healthy"
    }
    cycled = [checks[(name, "Healthy")] for name in names if name not in COMMANDED]
    assert len(cycled) == FLEET_SIZE - len(COMMANDED)
    assert min(cycled) >= 3 and max(cycled) - min(cycled) <= 1  # all of them, every cycle
    assert alert_posts(slack, alerts) == []

    # Acks while a cycle was in flight, and between cycles.
    assert all(a.status == 200 and a.seconds < SLACK_ACK_DEADLINE_S for a in acks)
    during = [
        a.seconds for a in acks if any(a.sent < end and a.done > start for start, end in windows)
    ]
    idle = [
        a.seconds
        for a in acks
        if not any(a.sent < end and a.done > start for start, end in windows)
    ]
    assert len(windows) >= 3 * len(services) and len(during) >= 10 and len(idle) >= 10
    typical = statistics.median(idle)
    assert percentile(during, 0.9) <= max(3 * typical, typical + 0.25), (idle, during)


def _commands_for(bot: object, seconds: float) -> list[Ack]:
    """/health <env> for the first ten environments, a burst of ten about every 0.3 s."""
    acks: list[Ack] = []

    def send(name: str) -> Ack:
        sent = time.time()
        reply = bot.command("/health", name)  # type: ignore[attr-defined]
        return Ack(sent, time.time(), reply.seconds, reply.response.status_code)

    end = time.monotonic() + seconds
    with ThreadPoolExecutor(max_workers=len(COMMANDED)) as pool:
        while time.monotonic() < end:
            acks += pool.map(send, COMMANDED)
            time.sleep(0.3)  # pacing the load generator, not waiting for the bot
    return acks
