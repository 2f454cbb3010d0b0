"""/health <env> diagnose: the runbook's Troubleshooting checks on every host of an environment.

Every host is diagnosed at once, at most 5 at a time (each_host.py), one command each
(diagnosis_probe.py), and results come back as each host answers. Beside them: the bot's own
/health check of base_url and the scheduled checks' memory history; verdict.py says which of
the runbook's common issues fit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bot.config import Environment, SshSettings, Thresholds
from bot.runbook.alerts.states import Metric
from bot.runbook.health.diagnosis_probe import DiagnosisSpec, HostDiagnosis, diagnose_host
from bot.runbook.health.each_host import on_each_host, targets
from bot.runbook.health.health import HealthResult
from bot.runbook.health.verdict import Finding, MemoryGrowth, findings, memory_growth
from bot.store import Store, StoreError

log = logging.getLogger(__name__)


async def diagnose_hosts(
    env: Environment, ssh: SshSettings, spec: DiagnosisSpec
) -> AsyncIterator[tuple[int, HostDiagnosis]]:
    """(position in env.hosts, its diagnosis), as each host answers, 5 at a time."""
    async for answered in on_each_host(env, ssh, lambda host: diagnose_host(host, spec)):
        yield answered


async def memory_history(store: Store, env: Environment) -> MemoryGrowth | None:
    """A steady memory climb in the scheduled checks' readings of env, if there is one."""
    try:
        state = await asyncio.to_thread(store.alert_state, env.name, Metric.MEMORY.value)
    except StoreError as exc:
        log.warning("memory history of %s not read: %s", env.name, exc)
        return None
    if state is None:
        return None
    return memory_growth(state.readings, env.check_interval)


@dataclass
class Diagnosis:
    """What is known so far: hosts fill in (None: not answered yet), then the verdict."""

    env: Environment
    spec: DiagnosisSpec
    thresholds: Thresholds
    hosts: list[HostDiagnosis | None] = field(default_factory=list)
    bot_check: HealthResult | None = None
    memory: MemoryGrowth | None = None
    done: bool = False

    @classmethod
    def start(cls, env: Environment, log_lines: int, thresholds: Thresholds) -> Diagnosis:
        spec = DiagnosisSpec.of(env, log_lines)
        return cls(env, spec, thresholds, [None] * len(targets(env)))

    @property
    def targets(self) -> list[str]:
        return targets(self.env)

    @property
    def answered(self) -> list[HostDiagnosis]:
        return [host for host in self.hosts if host is not None]

    def findings(self) -> tuple[Finding, ...]:
        return findings(
            self.spec,
            self.answered,
            self.bot_check,
            self.thresholds,
            self.memory,
            env_name=self.env.name,
        )
