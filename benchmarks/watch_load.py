"""A /health report's latency while watches run: 0, 20 and 50 watches, side by side in one run.

Watches last minutes and check every second here; they run in the workers' long lane so that
they never hold a worker a /health report needs. This measures what a person sees: from
sending a signed `/health staging` to its complete report reaching Slack (the fake records
the final chat.update), with 0, 20 and 50 `/health staging watch 10m` running.

Rounds are interleaved (0, 20, 50, 0, 20, 50, ...) so background noise hits each load alike.
A round starts its watches, waits until each has posted its first reading, sends `--reports`
reports one after another, then stops every watch with its Stop button and waits for the
summaries, so no round runs on top of the previous one's watches.

Run from the repository root::

    .venv/bin/python -m benchmarks.watch_load --rounds 3 --reports 10 --latency-ms 500
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bot.runbook.health.metrics_report import percentile
from tests.conftest import (
    BotProcess,
    http_bot,
    start_demo,
    stop_process,
    write_config,
)
from tests.support.health_reports import final_report
from tests.support.slack_fake import SlackFake

LOADS = (0, 20, 50)
WAIT_S = 60.0


def first_message(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    messages = fake.channel_messages(channel)
    return messages[0] if messages else None


def stop_value(message: dict[str, Any]) -> str:
    for block in message.get("blocks") or []:
        for element in block.get("elements", []):
            if element.get("action_id") == "watch_stop":
                return str(element["value"])
    raise AssertionError(f"no Stop button in {message.get('text')!r}")


def summarised(fake: SlackFake, channel: str) -> bool:
    message = first_message(fake, channel)
    return bool(message and message["text"].startswith("Watch of"))


def report_seconds(bot: BotProcess) -> float:
    started = time.monotonic()
    sent = bot.command("/health", "staging")
    report = final_report(bot.slack, sent.channel)
    (update,) = [
        c
        for c in bot.slack.calls_to("chat.update")
        if c.args["channel"] == sent.channel and c.args["ts"] == report["ts"]
    ]
    return update.at - started


def one_round(bot: BotProcess, watches: int, reports: int) -> list[float]:
    fake = bot.slack
    channels = [bot.command("/health", "staging watch 10m").channel for _ in range(watches)]
    fake.wait_for(lambda f: all(first_message(f, c) for c in channels), timeout=WAIT_S)
    samples = [report_seconds(bot) for _ in range(reports)]
    still_running = sum(not summarised(fake, c) for c in channels)
    if still_running != watches:
        raise AssertionError(f"{watches - still_running} watches ended during the reports")
    for channel in channels:
        message = first_message(fake, channel)
        assert message is not None
        bot.press("watch_stop", stop_value(message), channel=channel, message_ts=message["ts"])
    fake.wait_for(lambda f: all(summarised(f, c) for c in channels), timeout=WAIT_S)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.watch_load", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reports", type=int, default=10, help="reports per round")
    parser.add_argument("--latency-ms", type=int, default=500)
    args = parser.parse_args(argv)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="watch-load-") as tmp_dir, SlackFake() as fake:
        tmp = Path(tmp_dir)
        demo = start_demo(tmp, "demo")
        try:
            httpx.post(f"{demo.url}/admin/faults", json={"latency_ms": args.latency_ms})
            config = write_config(tmp / "eventmesh.yml", {"staging": demo.url}, check_interval="1s")
            samples: dict[int, list[float]] = {load: [] for load in LOADS}
            with http_bot(tmp, fake, config) as bot:
                report_seconds(bot)  # warm-up: connections, imports, the store's first write
                for number in range(1, args.rounds + 1):
                    for load in LOADS:
                        got = one_round(bot, load, args.reports)
                        samples[load] += got
                        print(
                            f"round {number}, {load} watches: median "
                            f"{percentile(got, 0.5) * 1000:.0f} ms",
                            file=sys.stderr,
                        )
        finally:
            stop_process(demo.process)

    print(
        f"/health staging report latency while N watches run (check_interval 1s), demo latency "
        f"{args.latency_ms} ms, {args.rounds} interleaved rounds × {args.reports} reports\n"
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} CPUs; {time.monotonic() - started:.0f} s"
    )
    print("\n| watches running | reports | p50 | p95 | max | p50 / idle p50 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    idle = percentile(samples[0], 0.5)
    for load in LOADS:
        ordered = sorted(samples[load])
        p50 = percentile(ordered, 0.5)
        print(
            f"| {load} | {len(ordered)} | {p50 * 1000:.0f} ms | "
            f"{percentile(ordered, 0.95) * 1000:.0f} ms | {ordered[-1] * 1000:.0f} ms | "
            f"{p50 / idle:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
