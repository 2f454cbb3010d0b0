"""The bot at rest with its scheduled checks running, and how fast an alert reaches Slack.

Two measurements of the real bot (HTTP mode, the Slack fake, demo EventMesh services), taken
from outside the process with psutil on its pid:

1. **Idle cost.** 4 environments checked every `--interval` (default 15 s: health, API, error
   rate from /metrics, memory and CPU of this machine), nobody typing anything, for
   `--idle` seconds (default 60): the peak resident memory (sampled every 0.25 s) and the CPU
   time the process used over the window, as a share of one core. Measured after the first
   cycle has run (so the checks' imports and connections are in), the resident memory right
   after start-up is printed beside it. Whether matplotlib is loaded is read from the bot's
   /proc/<pid>/maps (it must not be: it is imported only for a /health report chart).
2. **Alert latency.** `--trials` times: one environment's service starts answering healthz with
   503 (the moment of the POST to its /admin/faults), and the clock stops when the alert's
   message reaches the Slack fake; each fault comes at a random moment of the interval (a
   trial starts right after the previous alert resolved, on a check). With
   `alerts.breaches_to_fire` checks needed, the expected
   latency is between (breaches − 1) × interval (the first failing check came right after the
   fault) and breaches × interval; the goal is within one interval of breaches × interval.
   Between trials the service is healthy again and the alert resolved.

3. **Wake-ups.** The bot's voluntary context switches over the idle window, per second (psutil):
   a process that sleeps until something is due switches a few times a second (its checks,
   the leases it renews), one that polls switches at every poll.

`--profile FILE` then records a second idle window with py-spy (installed for profiling only,
not a dependency of the bot) into FILE (py-spy's raw format) and prints the frames most samples
were in; the measured window runs without it.

Run from the repository root::

    .venv/bin/python -m benchmarks.alerts_idle                 # 60 s idle + 3 trials at 15 s
    .venv/bin/python -m benchmarks.alerts_idle --interval 5s --idle 30 --trials 2   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.profiling import profile_summary, start_profile
from bot.config import parse_duration
from tests.conftest import DemoService, new_channel, start_demo, start_slack_bot, stop_process
from tests.support.alerts import alert_in, alerts_config
from tests.support.slack_fake import SlackFake

ENVIRONMENTS = ("local", "dev", "staging", "production")
BREACHES = 2


class Sampler:
    """Peak RSS of a process, sampled every `every` seconds on a thread of its own."""

    def __init__(self, process: psutil.Process, every: float = 0.25) -> None:
        self.process = process
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cycles(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("eventmesh_bot_check_cycles_total{")
    )


def mapped(pid: int, name: str) -> bool:
    return name in Path(f"/proc/{pid}/maps").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="15s", help="check_interval (default 15s)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, s (default 60)")
    parser.add_argument("--trials", type=int, default=3, help="alert latency trials (default 3)")
    parser.add_argument(
        "--profile", type=Path, help="then record a second idle window with py-spy here"
    )
    args = parser.parse_args()
    interval = parse_duration(args.interval).total_seconds()

    tmp = Path(tempfile.mkdtemp(prefix="alerts-idle-"))
    services: list[DemoService] = []
    with SlackFake() as slack:
        try:
            services = [start_demo(tmp, f"demo-{name}") for name in ENVIRONMENTS]
            alerts = new_channel()
            config = alerts_config(
                tmp / "eventmesh.yml",
                {name: s.url for name, s in zip(ENVIRONMENTS, services, strict=True)},
                alerts_channel=alerts,
                incidents_channel=new_channel(),
                check_interval=args.interval,
                alerts={"breaches_to_fire": BREACHES, "passes_to_resolve": 2},
            )
            bot = start_slack_bot(tmp, slack, config, LOG_LEVEL="WARNING")
            process = psutil.Process(bot.process.pid)
            try:
                started_rss = process.memory_info().rss
                while cycles(bot.metrics()) < 1:
                    time.sleep(0.1)  # the first cycle is in: its imports and connections too
                after_first = process.memory_info().rss
                cpu_before = process.cpu_times()
                switches_before = process.num_ctx_switches().voluntary
                wall_before = time.monotonic()
                with Sampler(process) as sampler:
                    time.sleep(args.idle)  # the measurement window: the bot left alone
                cpu_after = process.cpu_times()
                wall = time.monotonic() - wall_before
                switches = process.num_ctx_switches().voluntary - switches_before
                used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
                if args.profile:
                    # A window of its own, after the measured one: py-spy reading the bot
                    # 100 times a second is not part of what the bot costs at rest.
                    spy = start_profile(process.pid, args.idle, args.profile)
                    if spy is not None:
                        spy.wait(timeout=args.idle + 60)
                matplotlib = mapped(process.pid, "matplotlib")

                latencies = []
                for trial in range(args.trials):
                    target = services[trial % len(services)]
                    name = ENVIRONMENTS[trial % len(services)]
                    words = f"*Critical* · *{name}*"
                    # Faults come at any moment of a check interval, not just after a check.
                    time.sleep(random.uniform(0, interval))
                    faulted = time.monotonic()
                    target.set_faults(healthz_status=503)
                    slack.wait_for(lambda f, w=words: alert_in(f, alerts, w), timeout=6 * interval)
                    post = next(
                        c
                        for c in slack.calls_to("chat.postMessage")
                        if c.args.get("channel") == alerts and f"{name} ·" in c.args.get("text", "")
                    )
                    latencies.append(post.at - faulted)
                    print(f"trial {trial + 1}: {latencies[-1]:.1f} s", file=sys.stderr, flush=True)
                    target.reset()
                    slack.wait_for(
                        lambda f, n=name: "Resolved" in json.dumps(alert_in(f, alerts, f"*{n}*")),
                        timeout=6 * interval,
                    )
            finally:
                bot.http.close()
                stop_process(bot.process)
        finally:
            for service in services:
                stop_process(service.process)

    mib = 1024 * 1024
    print(
        f"Scheduled checks at rest: {len(ENVIRONMENTS)} environments every {args.interval}, "
        f"{wall:.0f} s window; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print("| measure | value | goal |")
    print("| --- | --- | --- |")
    print(f"| RSS after start-up | {started_rss / mib:.0f} MiB | |")
    print(f"| RSS after the first cycle | {after_first / mib:.0f} MiB | |")
    print(f"| peak RSS over the window | {sampler.peak / mib:.0f} MiB | < 120 MiB |")
    print(f"| CPU over the window | {used / wall * 100:.2f} % of one core | < 1 % |")
    print(f"| wake-ups (voluntary context switches) | {switches / wall:.1f} /s | |")
    print(f"| matplotlib loaded | {'yes' if matplotlib else 'no'} | no |")
    expected = BREACHES * interval
    for i, latency in enumerate(latencies, start=1):
        verdict = "within" if latency <= expected + interval else "OVER"
        print(
            f"| alert latency, trial {i} | {latency:.1f} s | ≤ {expected + interval:.0f} s "
            f"({BREACHES} × {args.interval} + one interval): {verdict} |"
        )
    if args.profile:
        print("\nWhere the CPU of a second idle window went (py-spy, inclusive):\n")
        print("```")
        print("\n".join(profile_summary(args.profile)))
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
