"""The scheduled checks: the runbook's Key Metrics of every environment, every check_interval.

Environments are grouped by their check_interval, and each group is one periodic job (APScheduler,
bot/scheduler.py) — not one job per environment: 200 environments at 15 s are one fan-out every
15 s. Each tick:

- health (healthz response time and failures, with the consecutive failures), API response time
  (the status endpoint) and error rate (5xx share of the requests since the last scrape of
  /metrics: bot/runbook/error_rate.py) come from one HealthChecker cycle, which runs on the
  probe thread (bot/runbook/probe.py): the bot's own loop only receives a few batches;
- memory and CPU of the environment's hosts come from bot/runbook/resources.py `read_usage`:
  psutil for `local`, one short /proc read over SSH for hosts. Each distinct host is read once
  per tick however many environments share it (200 `local` environments are one psutil call),
  and SSH connections are kept open between ticks (at most 5 are being opened at once in the
  whole process, ssh.MAX_OPENING). CPU is the busy share between two ticks: the whole
  interval, with no sampling sleep;
- build time: every build appended to `metrics.dir/build_metrics.csv` since the last one seen,
  once each (a job at the shortest interval; the file is re-read only when it changed).

A tick never waits for the previous one: an environment (or a host) whose check is still running
is skipped this tick and only it, so one slow environment never delays another's checks. A
check that fails — a timeout, a refused connection, unparsable metrics, SSH refused — is a
reading with its problem (bot/runbook/alerts.py classes it), never an exception out of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bot.acks_first import ACKS_FIRST
from bot.clock import utc_now
from bot.config import Config, Environment
from bot.runbook.alerts.alerts import CI, Alerts
from bot.runbook.alerts.error_rate import Counters, error_rate
from bot.runbook.alerts.states import Metric, Observation, Reading
from bot.runbook.health.health import Health, HealthChecker, HealthResult
from bot.runbook.health.metrics_report import BUILD_FILE, MetricsError, builds_since
from bot.runbook.health.resources import ProbeFailed, Usage, read_usage
from bot.runbook.setup.checks import Problem
from bot.runbook.setup.problems import SetupProblems
from bot.store import LeaseLost, StoreError
from bot.telemetry import Telemetry
from bot.transport import Transport, TransportError, transports_for

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
READ_GRACE_S = 15.0  # a host read may take connect_timeout plus this, then it is a finding
HISTORY = timedelta(days=30)  # health check rows kept
PRUNE_EVERY = timedelta(hours=6)


@dataclass(frozen=True)
class HostUsage:
    target: str
    memory_percent: float | None = None
    cpu_percent: float | None = None  # None on a host's first reading (no interval yet)
    problem: str | None = None
    # The bot's setup kept it from reading the host (TransportError.setup: the key to fix,
    # and the problem): a setup problem, not a finding about the host.
    setup: tuple[str, str] | None = None


class Monitor:
    def __init__(
        self,
        config: Config,
        checker: HealthChecker,
        alerts: Alerts,
        telemetry: Telemetry,
        *,
        setup: SetupProblems | None = None,
    ) -> None:
        self.config = config
        self.checker = checker
        self.alerts = alerts
        self.telemetry = telemetry
        self.setup = setup if setup is not None else SetupProblems()
        self._checking: set[str] = set()  # environments whose health check is under way
        self._baselines: dict[str, Counters] = {}  # each environment's counters, last measured
        self._transports: dict[str, Transport] = {}  # by target, kept open between ticks
        self._targets: dict[str, list[str]] = {}  # each environment's hosts, by target
        self._reading: set[str] = set()  # hosts being read
        self._usage: dict[str, Usage] = {}  # each host's last reading
        self._builds_file: tuple[float, int] | None = None  # (mtime, size) last read
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cycles: set[Future[list[HealthResult]]] = set()
        self._closed = False

    def jobs(self) -> list[tuple[str, timedelta, Job]]:
        """(name, interval, job) for each periodic job: two per check_interval, and builds."""
        groups: dict[timedelta, list[Environment]] = {}
        for env in self.config.environments.values():
            groups.setdefault(env.check_interval, []).append(env)
        jobs: list[tuple[str, timedelta, Job]] = []
        for interval, envs in sorted(groups.items()):
            label = f"{interval.total_seconds():g}s"
            jobs.append((f"checks:{label}", interval, partial(self.check_health, envs, label)))
            jobs.append((f"resources:{label}", interval, partial(self.check_resources, envs)))
        if groups:
            jobs.append(("checks:builds", min(groups), self.check_builds))
            jobs.append(("checks:history", PRUNE_EVERY, self.prune_history))
        return jobs

    async def prune_history(self) -> None:
        """Keep HISTORY of health check rows: the scheduled checks write one per environment
        per check_interval (200 environments at 15 s: over a million a day)."""
        before = utc_now() - HISTORY
        try:
            pruned = await asyncio.to_thread(self.checker.store.prune_health_checks, before)
        except StoreError as exc:
            log.error("old health checks not pruned: %s — check the database", exc)
            return
        if pruned:
            log.info("pruned %d health check(s) older than %s", pruned, before.date())

    def stand_down(self) -> None:
        """Another replica checks now: drop what is under way and what was measured (a later
        take-over starts from fresh baselines); kept connections stay open."""
        for cycle in self._cycles:
            cycle.cancel()
        for task in self._tasks:
            task.cancel()
        self._baselines.clear()
        self._usage.clear()
        self._builds_file = None

    async def close(self) -> None:
        """Stop what is under way and close the kept connections."""
        self._closed = True
        for cycle in self._cycles:
            cycle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        results = await asyncio.gather(
            *(t.close() for t in self._transports.values()), return_exceptions=True
        )
        for target, result in zip(self._transports, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing %s failed: %s", target, result)
        self._transports.clear()

    # --- health, API, error rate --------------------------------------------------------------

    async def check_health(self, envs: Sequence[Environment], label: str = "") -> None:
        """Start one health cycle for the group's environments not still being checked."""
        # Not while a burst is being acked: the cycle's probes and parsing take the CPU the
        # acks need (once started, its probes are timed, and nothing may pause them).
        await ACKS_FIRST.turn()
        ready = [env for env in envs if env.name not in self._checking]
        if len(ready) < len(envs):
            # Its own alert says why (no answer within the critical threshold).
            log.debug(
                "%d environment(s) of the %s checks still being checked; skipped this tick",
                len(envs) - len(ready),
                label or "scheduled",
            )
        if not ready or self._closed:
            return
        self._checking.update(env.name for env in ready)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def hand_over(batch: list[HealthResult]) -> None:  # on the probe thread
            with contextlib.suppress(RuntimeError):  # the bot's loop is gone: shutting down
                loop.call_soon_threadsafe(self._landed, batch)

        def over(cycle: Future[list[HealthResult]]) -> None:  # on the probe thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cycle_over, ready, cycle, started, label)

        cycle = self.checker.start(ready, hand_over)
        self._cycles.add(cycle)
        cycle.add_done_callback(over)

    def _landed(self, batch: list[HealthResult]) -> None:
        self._checking.difference_update(result.environment for result in batch)
        self._spawn(self._observe(self.health_observations(batch)))

    def _cycle_over(
        self,
        envs: Sequence[Environment],
        cycle: Future[list[HealthResult]],
        started: float,
        label: str,
    ) -> None:
        self._cycles.discard(cycle)
        self._checking.difference_update(env.name for env in envs)
        if cycle.cancelled():
            return
        failure = cycle.exception()
        if failure is not None:
            log.error("a scheduled health check cycle failed: %r", failure)
            return
        self.telemetry.check_cycles.labels(interval=label).inc()
        self.telemetry.check_cycle_seconds.observe(time.perf_counter() - started)

    def health_observations(self, batch: Iterable[HealthResult]) -> list[Observation]:
        """Health, API and error-rate readings from one batch of health check results."""
        observations: list[Observation] = []
        for result in batch:
            env, vitals = result.environment, result.vitals
            if vitals.healthz_problem is not None:
                failing = result.streak if result.health == Health.UNHEALTHY else 1
                detail = f"{failing} failed checks in a row" if failing > 1 else None
                health = Reading(problem=vitals.healthz_problem, detail=detail)
                observations.append(Observation(env, Metric.HEALTH, health))
            elif result.latency_ms is not None:
                observations.append(Observation(env, Metric.HEALTH, Reading(result.latency_ms)))
            if vitals.api_problem is not None:
                api = Reading(problem=vitals.api_problem)
                observations.append(Observation(env, Metric.API, api))
            elif vitals.api_latency_ms is not None:
                api = Reading(vitals.api_latency_ms)
                observations.append(Observation(env, Metric.API, api))
            errors = self._error_rate(env, vitals.requests, vitals.metrics_problem)
            if errors is not None:
                observations.append(Observation(env, Metric.ERROR_RATE, errors))
            self._counter_setup(env, vitals.metrics_setup, vitals.requests is not None)
        return observations

    def _counter_setup(self, env: str, missing: str | None, counted: bool) -> None:
        """A /metrics without the request counter is the config's to fix, named once."""
        if missing is not None:
            where = self.config.environments[env].metrics_url
            problem = Problem("metrics.requests_counter", f"{env} ({where}): {missing}")
            self.setup.report(f"metrics:{env}", [problem])
        elif counted:
            self.setup.report(f"metrics:{env}", [])

    def _error_rate(
        self, env: str, counters: Counters | None, problem: str | None
    ) -> Reading | None:
        if problem is not None:
            return Reading(problem=problem)
        if counters is None:
            return None  # the service is down: its health reading says so
        baseline = self._baselines.get(env)
        if baseline is None:
            self._baselines[env] = counters
            return None  # the first scrape only sets the baseline
        rate = error_rate(baseline, counters)
        if rate.measured or rate.reset:
            self._baselines[env] = counters
        if rate.percent is None:
            return None
        return Reading(
            rate.percent,
            detail=f"{rate.errors:,} of {rate.requests:,} requests answered 5xx since last checked",
        )

    # --- memory and CPU -----------------------------------------------------------------------

    async def check_resources(self, envs: Sequence[Environment]) -> None:
        """Read each distinct host of the group once (those not still being read)."""
        if self._closed:
            return
        reads: dict[str, asyncio.Task[HostUsage]] = {}
        ready: list[tuple[Environment, list[str]]] = []
        for env in envs:
            targets = self._hosts_of(env)
            if any(t in self._reading and t not in reads for t in targets):
                continue  # a host of it is still being read from an earlier tick
            for target in targets:
                if target not in reads:
                    reads[target] = self._spawn(self._read_host(self._transports[target]))
            ready.append((env, targets))
        if ready:
            self._spawn(self._observe_resources(ready, reads))

    def _hosts_of(self, env: Environment) -> list[str]:
        targets = self._targets.get(env.name)
        if targets is None:
            targets = []
            for transport in transports_for(env, self.config.ssh):
                targets.append(transport.target)
                # One kept transport per host, whichever environments share it.
                self._transports.setdefault(transport.target, transport)
            self._targets[env.name] = targets
        return targets

    async def _read_host(self, transport: Transport) -> HostUsage:
        target = transport.target
        self._reading.add(target)
        timeout_s = self.config.ssh.connect_timeout.total_seconds() + READ_GRACE_S
        try:
            async with asyncio.timeout(timeout_s):
                usage = await read_usage(transport, timeout_s=timeout_s)
        except TransportError as exc:
            if exc.setup is not None:
                return HostUsage(target, setup=(exc.setup, exc.problem))
            return HostUsage(target, problem=f"{target}: {exc.problem}")
        except ProbeFailed as exc:
            return HostUsage(target, problem=f"{target}: {exc.problem}")
        except TimeoutError:
            return HostUsage(target, problem=f"{target}: no answer within {timeout_s:g} s")
        except Exception:
            log.exception("reading the resources of %s failed inside the bot", target)
            return HostUsage(target, problem=f"{target}: the check itself failed (see the log)")
        finally:
            self._reading.discard(target)
        earlier = self._usage.get(target)
        self._usage[target] = usage
        cpu = usage.cpu_percent_since(earlier) if earlier is not None else None
        return HostUsage(target, usage.memory_percent, cpu)

    async def _observe_resources(
        self,
        envs: Sequence[tuple[Environment, list[str]]],
        reads: dict[str, asyncio.Task[HostUsage]],
    ) -> None:
        """Each environment's readings as soon as all its hosts are read, together with the
        others ready then (200 environments on one host: one batch, one transaction)."""
        waiting = list(envs)
        while waiting:
            unread = {reads[t] for _, targets in waiting for t in targets if not reads[t].done()}
            if unread:
                await asyncio.wait(unread, return_when=asyncio.FIRST_COMPLETED)
            done = [(env, t) for env, t in waiting if all(reads[x].done() for x in t)]
            waiting = [(env, t) for env, t in waiting if not all(reads[x].done() for x in t)]
            for env, targets in done:
                self._host_setup(env, [reads[target].result() for target in targets])
            await self._observe(
                observation
                for env, targets in done
                for observation in resource_observations(
                    env.name, [reads[target].result() for target in targets]
                )
            )

    def _host_setup(self, env: Environment, hosts: Sequence[HostUsage]) -> None:
        """Each host's setup problem (or none: fixed), under the host's own source."""
        for host in hosts:
            problems = []
            if host.setup is not None:
                key, text = host.setup
                if key == "ssh.key_file":  # one key file for all hosts: one line for all
                    problems.append(Problem(key, text.removeprefix("ssh.key_file ")))
                else:
                    where = f"environments.{env.name}.hosts"
                    problems.append(Problem(where, f"{host.target}: {text} ({key})"))
            self.setup.report(f"host:{host.target}", problems)

    # --- build time ---------------------------------------------------------------------------

    async def check_builds(self) -> None:
        """Each build appended to build_metrics.csv since the last one seen, once."""
        directory = self.config.metrics.dir
        path = directory / BUILD_FILE
        changed = await asyncio.to_thread(_file_stamp, path)
        if changed is None:
            if self._builds_file is not None:
                log.warning("%s is gone: build time is not watched until it is back", path)
            self._builds_file = None
            return
        if changed == self._builds_file:
            return
        self._builds_file = changed
        state = await self.alerts.state(CI, Metric.BUILD_TIME)
        threshold = self.config.thresholds.build_minutes
        try:
            builds = await asyncio.to_thread(
                builds_since, directory, state.sample if state else None, threshold
            )
        except MetricsError as exc:
            log.error("build time not read: %s", exc)
            await self._observe([Observation(CI, Metric.BUILD_TIME, Reading(problem=str(exc)))])
            return
        await self._observe(
            Observation(
                CI,
                Metric.BUILD_TIME,
                Reading(build.minutes, detail=f"build {build.build_id}", sample=build.build_id),
            )
            for build in builds
            # A cancelled build's duration says nothing about how long a build takes.
            if build.status != "cancelled"
        )

    # --- shared -------------------------------------------------------------------------------

    async def _observe(self, observations: Iterable[Observation]) -> None:
        await ACKS_FIRST.turn()  # a round of alert states is work a burst's acks go before
        try:
            for state, transition in await self.alerts.observe(observations):
                self.telemetry.alert_changes.labels(
                    metric=state.metric.value, change=transition.change.value
                ).inc()
        except StoreError as exc:
            log.error(
                "alert states not saved, these readings are lost: %s — check the database at "
                "EVENTMESH_DATABASE_URL",
                exc,
            )
        except LeaseLost as exc:
            # Another replica checks now (bot/runbook/alerts/checking.py): its readings count.
            log.warning("readings of this replica dropped: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a scheduled check failed inside the bot", exc_info=task.exception())


def resource_observations(env: str, hosts: Sequence[HostUsage]) -> list[Observation]:
    """Memory and CPU readings for an environment from its hosts' readings: the highest host
    counts. A host that cannot be read is the memory reading's problem (CPU is left out: one
    finding is enough)."""
    problems = [host.problem for host in hosts if host.problem is not None]
    memory = [
        (host.memory_percent, host.target) for host in hosts if host.memory_percent is not None
    ]
    observations = []
    if memory or problems:
        value, target = max(memory) if memory else (None, None)
        observations.append(
            Observation(
                env,
                Metric.MEMORY,
                Reading(value, "; ".join(problems) or None, _highest(target, len(hosts))),
            )
        )
    cpu = [(host.cpu_percent, host.target) for host in hosts if host.cpu_percent is not None]
    if cpu and not problems and len(cpu) == len(hosts):
        value, target = max(cpu)
        observations.append(
            Observation(env, Metric.CPU, Reading(value, detail=_highest(target, len(hosts))))
        )
    return observations


def _highest(target: str | None, hosts: int) -> str | None:
    if target is None:
        return None
    return target if hosts == 1 else f"{target}, the highest of {hosts} hosts"


def _file_stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)
