"""/health all over a fleet: the bot's fan-out vs the runbook's loop, and acks, in one run.

Everything runs side by side on one machine in one run: the real bot (HTTP mode, as
tests/conftest.py starts it) against the Slack Web API fake and a few demo EventMesh services
that answer /healthz in --healthz-ms and the status and metrics endpoints in --other-ms, with
--environments names spread over them. It measures:

- the slowest single check: `/health <env>` for --singles environments, one after the other,
  each from sending the command to its report being complete at the fake;
- a 200-environment cycle the same way, `/health all`, on cold connections (after --idle-s
  with no traffic, longer than the demo service's 5 s keep-alive) and on warm ones (right
  after), each round; goal: within 1.5x the slowest single check;
- the runbook's way: `curl` each environment's three URLs one after the other (a sample of
  environments with --loop-sample N, extrapolated and said so);
- ack latency of a burst of /health <env> commands and "Check again" presses sent at once
  while idle, and the same burst sent right after a `/health all` is acked, while its fan-out
  runs (goal: p99 under 100 ms in both);
- CPU seconds per `/health all` cycle, the bot's and the demo services' (psutil): on a shared
  machine they move much less than the wall time; and how many slow readings the reports say
  a second request confirmed (second_reading in bot/runbook/health/health.py).

Run from the repository root::

    .venv/bin/python -m benchmarks.health_fanout --environments 200 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import psutil

from benchmarks.profiling import profile_summary, start_profile, stop_profile
from tests.conftest import BOT_TOKEN, BotProcess, DemoService, stop_process
from tests.support.fleet import (
    Acked,
    Target,
    burst,
    env_names,
    fleet_config,
    latencies,
    percentile,
    start_fleet_bot,
    start_services,
    work_done,
)
from tests.support.slack_fake import SlackFake

REPORT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Cycle:
    scope: str
    ack_s: float  # the command's own ack
    seconds: float  # from sending the command to the report's last update at the fake
    reported_ms: list[int]  # healthz latency per environment, as the report shows it
    text: str
    # CPU seconds over the cycle: the bot's, and the demo services' together. Unlike the wall
    # time, these hardly move with what else the machine runs.
    bot_cpu_s: float = 0.0
    services_cpu_s: float = 0.0
    # Environments whose slowness a second request confirmed (health.py, second_reading)
    confirmed_slow: int = 0


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def run_check(bot: BotProcess, scope: str, services: Sequence[psutil.Process] = ()) -> Cycle:
    bot_process = psutil.Process(bot.process.pid)
    bot_cpu, services_cpu = cpu_seconds([bot_process]), cpu_seconds(services)
    started = time.monotonic()
    sent = bot.command("/health", scope)
    report = bot.slack.wait_for(lambda fake: _complete(fake, sent.channel), REPORT_TIMEOUT_S)
    done = max(
        call.at
        for call in bot.slack.calls_to("chat.update") + bot.slack.calls_to("chat.postMessage")
        if call.args.get("channel") == sent.channel
    )
    found = latencies(report)
    return Cycle(
        scope,
        sent.seconds,
        done - started,
        sorted(ms for _, ms in found.values() if ms is not None),
        report.get("text", ""),
        cpu_seconds([bot_process]) - bot_cpu,
        cpu_seconds(services) - services_cpu,
        sum(
            block["text"]["text"].count("confirmed by a second request")
            for block in report.get("blocks") or []
            if block.get("type") == "section"
        ),
    )


def final_report(slack: SlackFake, channel: str) -> dict:
    """The channel's complete report (its Check again button shows last), waited for as long
    as a fleet's report may take on a busy machine."""
    return slack.wait_for(lambda fake: _complete(fake, channel), REPORT_TIMEOUT_S)


def _complete(fake: SlackFake, channel: str) -> dict | None:
    for message in fake.channel_messages(channel):
        if any(block.get("type") == "actions" for block in message.get("blocks") or []):
            return message
    return None


def sequential_loop(services: Sequence[DemoService], names: Sequence[str]) -> float:
    """The runbook's way: curl healthz, status and metrics of each environment in turn."""
    curl = shutil.which("curl")
    started = time.monotonic()
    for i, _ in enumerate(names):
        base = services[i % len(services)].url
        for path in ("/healthz", "/api/v1/status", "/metrics"):
            if curl:
                subprocess.run(
                    [curl, "-s", "-o", os.devnull, "--max-time", "2", base + path], check=False
                )
            else:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(base + path, timeout=2)
    return time.monotonic() - started


def ack_burst(
    bot: BotProcess, targets: Sequence[Target], during_all: bool
) -> tuple[list[Acked], float | None]:
    """The burst, idle or right after /health all's ack; waits until all its work is done."""
    slack = bot.slack
    updates_before = len(slack.calls_to("chat.update"))
    cycle_seconds = None
    if during_all:
        started = time.monotonic()
        sent = bot.command("/health", "all")
        acked = burst(bot, targets)
        final_report(slack, sent.channel)  # a 1,000-environment report takes seconds
        cycle_seconds = (
            max(c.at for c in slack.calls_to("chat.update") if c.args["channel"] == sent.channel)
            - started
        )
    else:
        acked = burst(bot, targets)
    work_done(slack, acked, updates_before)
    return acked, cycle_seconds


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def ack_row(label: str, samples: Sequence[float]) -> str:
    return (
        f"| {label} | {len(samples)} | {fmt_ms(percentile(samples, 0.5))} | "
        f"{fmt_ms(percentile(samples, 0.9))} | {fmt_ms(percentile(samples, 0.99))} | "
        f"{fmt_ms(max(samples))} |"
    )


def busy_processes() -> str:
    """What else uses the CPU right now (a one-second sample), for the record."""
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent()
    time.sleep(1.0)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            share = p.cpu_percent()
            if share >= 5 and p.pid != os.getpid():
                cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])[:70].strip()
                busy.append(f"{share:.0f}% {cmd}")
    return "; ".join(busy) or "nothing over 5% of a CPU"


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="health-fanout-"))
    names = env_names(args.environments)
    began = time.monotonic()
    before = busy_processes()
    load_before = os.getloadavg()
    singles: list[Cycle] = []
    cold: list[Cycle] = []
    warm: list[Cycle] = []
    idle_acks: list[Acked] = []
    during_acks: list[Acked] = []
    during_cycles: list[float] = []
    try:
        with contextlib.ExitStack() as stack:
            slack = stack.enter_context(SlackFake(bot_token=BOT_TOKEN))
            services = start_services(tmp, args.services, args.healthz_ms, args.other_ms)
            for service in services:
                stack.callback(stop_process, service.process)
            bot = start_fleet_bot(
                tmp, slack, fleet_config(tmp / "eventmesh.yml", services, args.environments)
            )
            stack.callback(stop_process, bot.process)
            service_processes = [psutil.Process(s.process.pid) for s in services]
            if args.profile:
                spy = start_profile(bot.process.pid, 3600, args.profile)
                stack.callback(stop_profile, spy)

            for name in names[: args.singles]:
                singles.append(run_check(bot, name))
            print(f"singles: slowest {fmt_ms(max(c.seconds for c in singles))}", file=sys.stderr)
            # Reports to press "Check again" on, and the burst: half commands, half presses.
            half = args.burst // 2
            pressable = burst(bot, [Target(n) for n in names[:half]])
            reports = [final_report(slack, a.sent.channel) for a in pressable]
            targets = [Target(n) for n in names[half : 2 * half]] + [
                Target(a.target.env, a.sent.channel, r["ts"])
                for a, r in zip(pressable, reports, strict=True)
            ]
            for number in range(1, args.rounds + 1):
                time.sleep(args.idle_s)  # let the services close idle keep-alive connections
                cold.append(run_check(bot, "all", service_processes))
                warm.append(run_check(bot, "all", service_processes))
                acked, _ = ack_burst(bot, targets, during_all=False)
                idle_acks += acked
                acked, cycle_s = ack_burst(bot, targets, during_all=True)
                during_acks += acked
                during_cycles.append(cycle_s or 0.0)
                print(
                    f"round {number}: all cold {fmt_ms(cold[-1].seconds)} ({cold[-1].text}), "
                    f"warm {fmt_ms(warm[-1].seconds)}; acks idle max "
                    f"{fmt_ms(max(a.sent.seconds for a in acked))}",
                    file=sys.stderr,
                )
            loop_names = names[: args.loop_sample] if args.loop_sample else names
            loop_s = sequential_loop(services, loop_names)
            loop_total = loop_s * len(names) / len(loop_names)
            if bot.process.poll() is not None:
                raise RuntimeError(f"the bot exited early; see {bot.log}")
    except BaseException:
        print(f"health_fanout: stopped before the end; logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)

    slowest = max(c.seconds for c in singles)
    all_reported = [ms for c in cold + warm for ms in c.reported_ms]
    print(
        f"/health over {args.environments} environments on {args.services} demo services "
        f"(healthz {args.healthz_ms} ms, status and metrics {args.other_ms} ms), "
        f"{args.rounds} rounds"
    )
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, aiohttp {version('aiohttp')}, "
        f"uvicorn {version('uvicorn')}; {time.monotonic() - began:.0f} s total; load average "
        f"before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"busy before the run: {before}")
    print()
    print("| what | time | × slowest single check |")
    print("| --- | ---: | ---: |")
    print(
        f"| slowest single check (`/health <env>`, {len(singles)} envs) | {fmt_ms(slowest)} | 1.0 |"
    )
    for label, cycles in (("cold connections", cold), ("warm connections", warm)):
        times = [c.seconds for c in cycles]
        print(
            f"| `/health all`, {label} (median of {len(times)}; max) | "
            f"{fmt_ms(statistics.median(times))}; {fmt_ms(max(times))} | "
            f"{statistics.median(times) / slowest:.2f}; {max(times) / slowest:.2f} |"
        )
    print(
        f"| `/health all` with the ack burst on top (median of {len(during_cycles)}) | "
        f"{fmt_ms(statistics.median(during_cycles))} | "
        f"{statistics.median(during_cycles) / slowest:.2f} |"
    )
    sampled = (
        f"{len(loop_names)} of {len(names)} environments, extrapolated"
        if len(loop_names) < len(names)
        else "every environment"
    )
    best = statistics.median(c.seconds for c in warm + cold)
    print(
        f"| runbook's loop: curl ×3 per environment, one after the other ({sampled}) | "
        f"{loop_total:,.1f} s | {loop_total / slowest:.0f} |"
    )
    print()
    print(f"loop / `/health all` (median, cold and warm): {loop_total / best:.0f}×")
    bot_cpu = [c.bot_cpu_s for c in cold + warm]
    services_cpu = [c.services_cpu_s for c in cold + warm]
    print(
        f"CPU per `/health all` cycle (median; max of {len(bot_cpu)}): the bot "
        f"{statistics.median(bot_cpu):.2f} s; {max(bot_cpu):.2f} s, the {args.services} demo "
        f"services together {statistics.median(services_cpu):.2f} s; {max(services_cpu):.2f} s"
    )
    print(
        "`/health all`'s own ack: max "
        + fmt_ms(max(c.ack_s for c in cold + warm))
        + f" over {len(cold + warm)} cycles"
    )
    print(
        f"healthz latency the reports showed (all cycles, {len(all_reported)} values): "
        f"min {min(all_reported)} ms, median {statistics.median(all_reported):.0f} ms, "
        f"p99 {percentile(all_reported, 0.99):.0f} ms, max {max(all_reported)} ms; "
        "reports: "
        + "; ".join(
            f"{n}× {text.split(': ', 1)[-1]}"
            for text, n in Counter(c.text for c in cold + warm).most_common()
        )
        + f"; slow as confirmed by a second request: {sum(c.confirmed_slow for c in cold + warm)}"
    )
    print()
    print(
        f"Ack latency, a burst of {len(targets)} per round "
        f"({half} `/health <env>` + {half} Check again presses), sent at once:"
    )
    print()
    print("| when | acks | p50 | p90 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(ack_row("idle", [a.sent.seconds for a in idle_acks]))
    print(ack_row("during `/health all`", [a.sent.seconds for a in during_acks]))
    statuses = {a.sent.response.status_code for a in idle_acks + during_acks}
    print()
    print(f"HTTP statuses: {sorted(statuses)}")
    if args.profile:
        print("\nWhere the bot's CPU went over the run (py-spy, inclusive):\n\n```")
        print("\n".join(profile_summary(args.profile, top=14)))
        print("```")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.health_fanout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--environments", type=int, default=200)
    parser.add_argument("--services", type=int, default=4, help="demo services behind them")
    parser.add_argument("--healthz-ms", type=int, default=200)
    parser.add_argument("--other-ms", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=10, help="single-environment checks")
    parser.add_argument("--burst", type=int, default=20, help="acks per burst (even)")
    parser.add_argument("--idle-s", type=float, default=6.0, help="pause before a cold cycle")
    parser.add_argument("--profile", type=Path, help="record the bot with py-spy into this file")
    parser.add_argument(
        "--loop-sample", type=int, default=0, help="loop over this many environments only (0: all)"
    )
    args = parser.parse_args(argv)
    if args.environments < 1 or args.environments > 5000 or args.rounds < 1 or args.burst < 2:
        parser.error("--environments 1-5000, --rounds >= 1, --burst >= 2")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
