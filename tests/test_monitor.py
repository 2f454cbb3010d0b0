"""The scheduled checks' readings, in process: the real prober and health checker against the
demo services, psutil, the loopback sshd, the store, and build_metrics.csv on disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from bot.config import Config
from bot.runbook.alerts.alerts import CI, Alerts
from bot.runbook.alerts.monitor import Monitor
from bot.runbook.alerts.states import AlertState, Metric
from bot.runbook.health.health import HealthChecker
from bot.runbook.health.probe import Prober
from bot.runbook.health.resources import read_usage
from bot.runbook.levels import Level
from bot.store import Store
from bot.telemetry import Telemetry
from bot.transport import SshTransport
from tests.conftest import DemoService
from tests.support.sshd import Sshd

WAIT_S = 20.0


@dataclass
class Watch:
    monitor: Monitor
    alerts: Alerts
    checker: HealthChecker

    async def state(
        self,
        env: str,
        metric: Metric,
        until: Callable[[AlertState], bool] = lambda state: True,
    ) -> AlertState:
        """The state once it satisfies `until` (readings land in the background)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            state = await self.alerts.state(env, metric)
            if state is not None and until(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{env}/{metric}: {state}")
            await asyncio.sleep(0.02)  # readings arrive on the loop: a condition, not a time

    async def health(self, *names: str) -> None:
        """One health tick of these environments, and its results observed."""
        envs = [self.monitor.config.environments[name] for name in names]
        before = {n: await self.alerts.state(n, Metric.HEALTH) for n in names}
        await self.monitor.check_health(envs)
        for name in names:
            seen = before[name].checked_at if before[name] else None
            await self.state(name, Metric.HEALTH, lambda s, seen=seen: s.checked_at != seen)


@asynccontextmanager
async def watching(tmp_path: Path, **config: Any) -> AsyncIterator[Watch]:
    settings = Config.model_validate(config)
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    telemetry = Telemetry()
    with Prober() as prober:
        checker = HealthChecker(prober, settings.thresholds, store, telemetry)
        alerts = Alerts(settings, store)
        monitor = Monitor(settings, checker, alerts, telemetry)
        try:
            yield Watch(monitor, alerts, checker)
        finally:
            await monitor.close()
            store.close()


def local(url: str, **more: Any) -> dict[str, Any]:
    return {"base_url": url, "transport": "local", **more}


def test_health_api_and_error_rate_from_one_cycle(
    tmp_path: Path, demo: DemoService, dead_url: str
) -> None:
    async def main() -> None:
        environments = {"staging": local(demo.url), "production": local(dead_url)}
        async with watching(tmp_path, environments=environments) as w:
            demo.set_faults(path_latency_ms={"/healthz": 120, "/api/v1/status": 60})
            await w.health("staging", "production")
            health = await w.alerts.state("staging", Metric.HEALTH)
            api = await w.alerts.state("staging", Metric.API)
            assert health is not None and health.value is not None and health.value >= 120
            assert api is not None and api.value is not None and 60 <= api.value < 120
            # The first scrape is the baseline: no error rate yet.
            assert await w.alerts.state("staging", Metric.ERROR_RATE) is None
            # Down: one finding (health), not three.
            down = await w.alerts.state("production", Metric.HEALTH)
            assert down is not None and down.problem == "healthz: connection refused"
            assert down.recent == (Level.CRITICAL,)
            assert await w.alerts.state("production", Metric.API) is None
            assert await w.alerts.state("production", Metric.ERROR_RATE) is None

            demo.set_faults(traffic_rps=1000, error_rate=0.02)
            deadline = time.monotonic() + WAIT_S
            while (errors := await w.alerts.state("staging", Metric.ERROR_RATE)) is None or (
                errors.value is None  # the 2 % hit the scrape itself this time
            ):
                # Ticks until MIN_REQUESTS requests came between two scrapes (a condition).
                assert time.monotonic() < deadline
                await w.health("staging")
            assert errors.value == pytest.approx(2.0, abs=0.6)
            assert "requests answered 5xx" in (errors.detail or "")

    asyncio.run(main())


def test_failed_checks_are_readings_with_their_problem(tmp_path: Path, demo: DemoService) -> None:
    async def main() -> None:
        async with watching(tmp_path, environments={"staging": local(demo.url)}) as w:
            demo.set_faults(healthz_status=503, status_down=True, metrics_down=True)
            await w.health("staging")
            health = await w.alerts.state("staging", Metric.HEALTH)
            api = await w.alerts.state("staging", Metric.API)
            errors = await w.alerts.state("staging", Metric.ERROR_RATE)
            assert health is not None and health.problem == "healthz answered HTTP 503"
            assert api is not None and api.problem == "status endpoint answered HTTP 503"
            assert errors is not None and errors.problem == "metrics endpoint answered HTTP 404"
            assert errors.recent == (Level.WARNING,)  # unreadable: a Warning, not a page

            demo.reset()
            await w.health("staging")
            health = await w.alerts.state("staging", Metric.HEALTH)
            assert health is not None and health.problem is None and health.value is not None

    asyncio.run(main())


def test_a_slow_environment_is_skipped_not_waited_for(
    tmp_path: Path, demo: DemoService, demo_b: DemoService
) -> None:
    async def main() -> None:
        environments = {"staging": local(demo.url), "dev": local(demo_b.url)}
        async with watching(tmp_path, environments=environments) as w:
            demo.set_faults(path_latency_ms={"/healthz": 1500})
            envs = list(w.monitor.config.environments.values())
            await w.monitor.check_health(envs)
            await w.state("dev", Metric.HEALTH)
            # staging is still being checked: the next ticks check dev alone.
            for ticks in (2, 3):
                await w.monitor.check_health(envs)
                await w.state("dev", Metric.HEALTH, lambda s, n=ticks: len(s.readings) == n)
            staging = await w.state("staging", Metric.HEALTH)
            assert len(staging.readings) == 1 and staging.value is not None
            assert staging.value >= 1500

    asyncio.run(main())


def test_memory_and_cpu_of_local_read_once_for_all_environments_sharing_it(
    tmp_path: Path, demo: DemoService
) -> None:
    async def main() -> None:
        names = [f"env{i}" for i in range(20)]
        environments = {name: local(demo.url) for name in names}
        async with watching(tmp_path, environments=environments) as w:
            envs = list(w.monitor.config.environments.values())
            await w.monitor.check_resources(envs)
            first = await w.state("env7", Metric.MEMORY)
            assert first.value == pytest.approx(psutil.virtual_memory().percent, abs=5)
            assert first.detail == "local"
            assert await w.alerts.state("env7", Metric.CPU) is None  # no interval yet
            assert list(w.monitor._transports) == ["local"]  # one host for the twenty
            await _cpu_time_passes()
            await w.monitor.check_resources(envs)
            cpu = await w.state("env19", Metric.CPU)
            assert cpu.value is not None and 0 <= cpu.value <= 100

    asyncio.run(main())


async def _cpu_time_passes() -> None:
    """Until the machine's CPU time counters have moved (they tick every 10 ms or so): a CPU
    share needs some time between its two readings."""
    start = sum(psutil.cpu_times())
    while sum(psutil.cpu_times()) - start < 0.5:
        await asyncio.sleep(0.02)  # a condition on the counters, not a fixed time


def test_hosts_over_ssh_are_read_from_proc_and_a_refused_host_is_a_finding(
    tmp_path: Path, sshd: Sshd
) -> None:
    async def main() -> None:
        settings = sshd.settings()
        environments = {
            "staging": {"base_url": "http://127.0.0.1:1", "hosts": [str(sshd.host)]},
            "production": {
                "base_url": "http://127.0.0.1:1",
                "hosts": [str(sshd.host), "deploy@127.0.0.1:1"],
            },
        }
        ssh = {
            "key_file": str(settings.key_file),
            "known_hosts": str(settings.known_hosts),
            "connect_timeout": "5s",
        }
        async with watching(tmp_path, environments=environments, ssh=ssh) as w:
            envs = list(w.monitor.config.environments.values())
            await w.monitor.check_resources(envs)
            staging = await w.state("staging", Metric.MEMORY)
            # The loopback sshd's host is this machine.
            assert staging.value == pytest.approx(psutil.virtual_memory().percent, abs=5)
            assert staging.detail == str(sshd.host) and staging.problem is None
            production = await w.state("production", Metric.MEMORY)
            assert production.problem is not None
            assert production.problem.startswith("deploy@127.0.0.1:1: ")
            assert "refused" in production.problem
            assert production.value == pytest.approx(staging.value, abs=5)  # the host it read
            assert production.recent == (Level.WARNING,)

            await _cpu_time_passes()
            await w.monitor.check_resources(envs)
            cpu = await w.state("staging", Metric.CPU)
            assert cpu.value is not None
            assert await w.alerts.state("production", Metric.CPU) is None  # one finding

    asyncio.run(main())


def test_read_usage_over_ssh_agrees_with_psutil(sshd: Sshd) -> None:
    async def main() -> None:
        transport = SshTransport(sshd.host, sshd.settings())
        try:
            first = await read_usage(transport)
            second = await read_usage(transport)
        finally:
            await transport.close()
        assert first.target == str(sshd.host)
        assert first.memory_percent == pytest.approx(psutil.virtual_memory().percent, abs=5)
        cpu = second.cpu_percent_since(first)
        assert cpu is None or 0 <= cpu <= 100  # None: no tick between two quick reads

    asyncio.run(main())


BUILDS = """\
build_id,started_at,duration_seconds,status
1040,2025-10-16T08:00:00Z,1500,success
1041,2025-10-16T12:00:00Z,2700,success
"""


def test_each_new_build_is_read_once(tmp_path: Path) -> None:
    async def main() -> None:
        metrics = tmp_path / "metrics"
        metrics.mkdir()
        csv = metrics / "build_metrics.csv"
        environments = {"staging": local("http://127.0.0.1:1")}
        async with watching(
            tmp_path, environments=environments, metrics={"dir": str(metrics)}
        ) as w:
            await w.monitor.check_builds()
            assert await w.alerts.state(CI, Metric.BUILD_TIME) is None  # no file yet
            csv.write_text(BUILDS)
            await w.monitor.check_builds()
            state = await w.state(CI, Metric.BUILD_TIME)
            # Only the newest build: a history is not news.
            assert (state.sample, state.value, state.recent) == ("1041", 45.0, (Level.CRITICAL,))
            await w.monitor.check_builds()  # unchanged file: nothing read
            assert len((await w.state(CI, Metric.BUILD_TIME)).readings) == 1
            csv.write_text(
                BUILDS
                + "1042,2025-10-17T08:00:00Z,100,cancelled\n"
                + "1043,2025-10-17T09:00:00Z,2520,failure\n"
            )
            await w.monitor.check_builds()
            state = await w.state(CI, Metric.BUILD_TIME)
            # 1042 was cancelled (says nothing of build time); 1043 took 42 minutes.
            assert state.sample == "1043" and state.readings == (45.0, 42.0)
            assert state.level == Level.CRITICAL and state.alert_id is not None
            csv.write_text("build_id,started_at\n1,2025\n")
            await w.monitor.check_builds()
            broken = await w.state(CI, Metric.BUILD_TIME, lambda s: s.problem is not None)
            assert "the header lacks duration_seconds" in (broken.problem or "")

    asyncio.run(main())
