"""Failover of the checking lease: how long the scheduled checks stop when their replica dies.

Three real bots (HTTP mode, the Slack fake) on one new PostgreSQL database, all with
`alerts.scheduled_checks: true`, watching one demo EventMesh service every `--interval`.
Exactly one of them checks (the one holding the checking lease: its /metrics say
`eventmesh_bot_checking_lease 1`). `--kills` times: that one is SIGKILLed, and the clock runs
from the kill to the next /healthz request the demo service receives — the first check of the
replica that took over. A new replica is started after each kill, so three are always there.

What bounds it (bot/runbook/alerts/checking.py): the lease runs `ttl` = half the interval
(1-15 s) and is renewed, or asked for, every ttl/3; a dead holder's lease is taken within
ttl + ttl/3 of its last renewal, and the new holder checks at once. So the failover is at most
2/3 of the interval, plus the first check's start.

Run from the repository root (PostgreSQL at 127.0.0.1:5432, user postgres, trust auth)::

    .venv/bin/python -m benchmarks.checking_failover                    # 10 kills at 30 s
    .venv/bin/python -m benchmarks.checking_failover --interval 3s --kills 10
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.config import parse_duration
from bot.runbook.alerts.checking import lease_timing
from tests.conftest import DemoService, new_channel, start_demo, stop_process
from tests.support import postgres
from tests.support.alerts import alerts_config
from tests.support.replicas import checkers, start_replicas, stop_replicas, wait_until
from tests.support.slack_fake import SlackFake

REPLICAS = 3


def first_check_since(demo: DemoService, moment: float) -> float | None:
    started = [
        r["started"] for r in demo.requests() if r["path"] == "/healthz" and r["started"] >= moment
    ]
    return min(started) if started else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="30s", help="check_interval (default 30s)")
    parser.add_argument("--kills", type=int, default=10, help="checkers killed (default 10)")
    args = parser.parse_args()
    interval = parse_duration(args.interval)
    ttl, renew = lease_timing(interval)

    tmp = Path(tempfile.mkdtemp(prefix="checking-failover-"))
    failovers: list[float] = []
    with SlackFake() as slack:
        demo = start_demo(tmp, "demo")
        url = postgres.create_database("bench")
        config = alerts_config(
            tmp / "eventmesh.yml",
            {"staging": demo.url},
            alerts_channel=new_channel(),
            incidents_channel=new_channel(),
            check_interval=args.interval,
        )
        bots = []
        try:
            bots = start_replicas(tmp / "first", slack, config, url, REPLICAS, LOG_LEVEL="WARNING")
            for kill in range(args.kills):
                wait_until("one checker", lambda b=bots: len(checkers(b)) == 1, timeout=60)
                (checker,) = checkers(bots)
                checker.process.send_signal(signal.SIGKILL)
                killed_at = time.time()
                checker.process.wait()
                wait_until(
                    "a check after the kill",
                    lambda t=killed_at: first_check_since(demo, t) is not None,
                    timeout=interval.total_seconds() * 3,
                )
                resumed = first_check_since(demo, killed_at)
                assert resumed is not None
                failovers.append(resumed - killed_at)
                print(
                    f"kill {kill + 1}: checks resumed after {failovers[-1]:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
                bots.remove(checker)
                bots += start_replicas(
                    tmp / f"after-{kill}", slack, config, url, 1, LOG_LEVEL="WARNING"
                )
        finally:
            stop_replicas(bots)
            stop_process(demo.process)
            postgres.drop_database(url)

    print(
        f"Checking lease failover: {REPLICAS} replicas on PostgreSQL, check_interval "
        f"{args.interval} (lease {ttl.total_seconds():g} s, renewed every "
        f"{renew.total_seconds():.2f} s), {args.kills} SIGKILLs of the checker; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print("| measure | value | bound |")
    print("| --- | --- | --- |")
    bound = (ttl + renew).total_seconds()
    print(f"| median, kill → next check | {statistics.median(failovers):.2f} s | |")
    print(
        f"| max, kill → next check | {max(failovers):.2f} s | {bound:.1f} s + the check's start |"
    )
    print(f"| each | {', '.join(f'{f:.1f}' for f in failovers)} s | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
