"""Several real bot processes on one database, started together, as an orchestrator would."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import (
    BotProcess,
    serving_or_stopped,
    slack_bot_env,
    spawn_bot,
    stop_process,
)
from tests.support.slack_fake import SlackFake


def start_replicas(
    tmp: Path, slack: SlackFake, config: Path, database_url: str, count: int, **env: str
) -> list[BotProcess]:
    """`count` bots on database_url, all spawned before any is waited for."""
    spawned = []
    for n in range(count):
        workdir = tmp / f"replica-{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        spawned.append(spawn_bot(workdir, **slack_bot_env(slack, config, database_url), **env))
    bots = []
    try:
        for process, url, log in spawned:
            serving_or_stopped(f"{url}/healthz", process, log)
            bots.append(BotProcess(url, process, log, database_url, slack))
    except BaseException:
        for process, _, _ in spawned:
            stop_process(process)
        raise
    return bots


def stop_replicas(bots: Sequence[BotProcess]) -> list[int]:
    """SIGTERM to all at once, then the exit status of each (a killed one: -9)."""
    for bot in bots:
        if bot.process.poll() is None:
            bot.process.send_signal(signal.SIGTERM)
    codes: list[int] = []
    for bot in bots:
        try:
            codes.append(bot.process.wait(timeout=15))
        except subprocess.TimeoutExpired:
            codes.append(stop_process(bot.process))  # kills what SIGTERM did not stop
        bot.http.close()
    return codes


def metric(bot: BotProcess, name: str) -> float:
    """A metric's value (summed over its labels) on a live bot's /metrics."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(bot.metrics()))


def checkers(bots: Sequence[BotProcess]) -> list[BotProcess]:
    """The live bots whose /metrics say they hold the checking lease."""
    return [
        bot
        for bot in bots
        if bot.process.poll() is None and metric(bot, "eventmesh_bot_checking_lease") == 1
    ]
