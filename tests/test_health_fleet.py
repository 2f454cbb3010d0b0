"""/health at fleet scale: 200 environments checked at once, classed right, acks unaffected.

The real bot in HTTP mode checks 200 environments spread over four demo services (healthz
answers in 200 ms, status and metrics in 50 ms). Nothing here is a stopwatch bound: latencies
are what the bot reports about the services, and ack times are compared with the same
commands sent while the bot is idle, in the same run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BotProcess, DemoService, stop_process
from tests.support.fleet import (
    FLEET_SIZE,
    HEALTHZ_MS,
    Acked,
    Target,
    burst,
    env_names,
    fleet_config,
    latencies,
    percentile,
    service_of,
    start_fleet_bot,
    start_services,
    work_done,
)
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, final_report, report_text
from tests.support.slack_fake import SlackFake, block_kit_errors

# Compares timings in one run: alone, after the parallel run (scripts/test).
pytestmark = pytest.mark.serial

# What a reported latency may add to the service's own record of its slowest healthz (its
# request log, which cannot see the service's own accept-and-parse queue). Measured: 1-25 ms
# typically, up to ~110 ms while other suites load the 2 shared cores. Before the fix the bot
# added 0.3-8 s of waiting for a pool slot and for its event loop, and classed these services
# Unhealthy. (That a slot wait never counts is tested exactly in test_probe.py.)
BOT_SHARE_MS = 150
# The runbook's "API slow" starts at 200 ms; the status endpoint answers in 50 ms. Under
# another test suite's load the demo services themselves were seen taking up to 180 ms for it
# (their request logs) while answering 600 requests on 2 shared cores: 400 ms keeps this test
# about the bot, not about how busy the machine is. healthz keeps the runbook's 500 ms.
API_WARNING_MS = 400


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, slack: SlackFake) -> Iterator[Fleet]:
    tmp: Path = tmp_path_factory.mktemp("fleet")
    services = start_services(tmp)
    try:
        config = fleet_config(tmp / "eventmesh.yml", services, api_warning_ms=API_WARNING_MS)
        bot = start_fleet_bot(tmp, slack, config)
        try:
            yield Fleet(bot, services)
        finally:
            bot.http.close()
            code = stop_process(bot.process)
            assert code == 0, f"the bot exited with {code} on SIGTERM:\n{bot.log.read_text()}"
    finally:
        for service in services:
            stop_process(service.process)


@dataclass
class Fleet:
    bot: BotProcess
    services: list[DemoService]

    def forget_requests(self) -> None:
        for service in self.services:
            httpx.delete(f"{service.url}/admin/requests", timeout=5).raise_for_status()

    def served_ms(self, service: DemoService, path: str) -> list[float]:
        """How long the service itself took for each request to path, from its request log."""
        return [
            (r["finished"] - r["started"]) * 1000 for r in service.requests() if r["path"] == path
        ]

    def served(self) -> str:
        """The services' own timings, for failure messages."""
        return "; ".join(
            f"{path} max {max(ms):.0f} ms, p90 {percentile(ms, 0.9):.0f} ms"
            for path in ("/healthz", "/api/v1/status", "/metrics")
            if (ms := [x for s in self.services for x in self.served_ms(s, path)])
        )


@pytest.mark.parametrize("connections", ["cold", "warm"])
def test_two_hundred_environments_are_healthy_at_their_own_latency(
    fleet: Fleet, connections: str
) -> None:
    fleet.forget_requests()
    sent = fleet.bot.command("/health", "all")
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    report = final_report(fleet.bot.slack, sent.channel)

    assert block_kit_errors(report["blocks"]) == []
    problems = [line for line in report_text(report).splitlines() if "›" in line]
    assert report["text"] == "Health of all environments: 200 Healthy", (
        f"the services themselves: {fleet.served()}",
        problems[:5],
    )
    found = latencies(report)
    assert sorted(found) == env_names()
    assert all(ms is not None for _, ms in found.values())
    # The service's time: at least its 200 ms (rounded) ...
    assert min(ms or 0 for _, ms in found.values()) >= HEALTHZ_MS - 1
    # ... and no more than that service's own slowest answer plus the client's reading of it:
    # never the wait for a connection slot or for a busy event loop.
    for service in fleet.services:
        own = fleet.served_ms(service, "/healthz")
        shown = [
            ms or 0 for n, (_, ms) in found.items() if service_of(n, fleet.services) is service
        ]
        assert len(shown) == FLEET_SIZE // len(fleet.services) <= len(own)
        assert max(shown) <= max(own) + BOT_SHARE_MS, (sorted(shown)[-5:], sorted(own)[-5:])


def _report_completed_at(slack: SlackFake, channel: str) -> float:
    return next(
        call.at
        for call in slack.calls_to("chat.update")
        if call.args["channel"] == channel
        and any(b.get("type") == "actions" for b in call.args.get("blocks") or [])
    )


def test_acks_during_a_two_hundred_environment_cycle_are_as_fast_as_idle(fleet: Fleet) -> None:
    fleet_bot = fleet.bot
    slack = fleet_bot.slack
    # Ten reports to press "Check again" on.
    pressable = burst(fleet_bot, [Target(n) for n in env_names()[:10]])
    reports = [final_report(slack, a.sent.channel) for a in pressable]
    presses = [
        Target(a.target.env, a.sent.channel, r["ts"])
        for a, r in zip(pressable, reports, strict=True)
    ]
    targets = [Target(n) for n in env_names()[10:20]] + presses

    updates_before = len(slack.calls_to("chat.update"))
    idle = burst(fleet_bot, targets)
    work_done(slack, idle, updates_before)

    updates_before = len(slack.calls_to("chat.update"))
    cycle = fleet_bot.command("/health", "all")
    during = burst(fleet_bot, targets)
    final_report(slack, cycle.channel)
    work_done(slack, during, updates_before)

    everything: list[Acked] = [*idle, *during]
    assert all(a.sent.response.status_code == 200 for a in everything)
    assert cycle.seconds < SLACK_ACK_DEADLINE_S
    assert max(a.sent.seconds for a in everything) < SLACK_ACK_DEADLINE_S
    # They really arrived during the cycle: every one was acked before its report was done.
    assert max(a.done_at for a in during) < _report_completed_at(slack, cycle.channel)
    idle_s = [a.sent.seconds for a in idle]
    during_s = [a.sent.seconds for a in during]
    typical = percentile(idle_s, 0.5)
    # As fast as idle, with room for a shared 2-core machine: before the fix these waited
    # seconds behind the fan-out.
    assert percentile(during_s, 0.9) <= max(3 * typical, typical + 0.25), (idle_s, during_s)
