"""Pages through a Slack outage: delivered / due, duplicates, and the delay after recovery.

For each of the Slack fake's fault modes — HTTP 503, 429 with Retry-After 5 s, ok:false
ratelimited, refused connections, calls carried out with the answer dropped — one run of the
real bot (HTTP mode), measured from outside:

1. the bot starts with Slack healthy: 4 escalation levels, 3 s apart, one person each (CTO last,
   repeated hourly), 'staging' checked every second;
2. the fault starts, for `--outage` seconds (the issue's 90 s by default); during it three
   /escalate, staging's healthz turned to 503 (a Critical alert, which opens a fourth incident),
   /escalate status and /health staging are sent, and a second bot is started and sent
   /escalate — every ack timed as Slack would see it;
3. the fault ends; the clock runs until every page the bots wrote (one outbox row per person
   and level, read from their stores) is in the fake and nothing waits in their outboxes.

Reported per mode: pages delivered / due; duplicates (pages, incident cards, thread lines,
alert posts beyond one); the last page's delay after Slack answered again (≤ 0: it landed
during the outage — a dropped answer's message did); the time until both outboxes were empty
(cards and thread lines go at Slack's one post a second per channel); the slowest ack during
the outage; the outage log lines of each bot.

Run from the repository root::

    .venv/bin/python -m benchmarks.delivery_faults                      # 90 s per mode, ~10 min
    .venv/bin/python -m benchmarks.delivery_faults --outage 30 --modes 5xx drop
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import BOT_TOKEN, start_demo, stop_process
from tests.support.fault_drill import DrillBot, start_drill_bot
from tests.support.slack_fake import SlackFake
from tests.support.slack_faults import FAULT_MODES


@dataclass
class Result:
    mode: str
    due: int
    delivered: int
    duplicates: int
    alert_posts: int
    last_page_after_s: float
    settled_after_s: float
    max_ack_ms: float
    log_lines: str


def last_page_at(slack: SlackFake, drills: list[DrillBot]) -> float:
    """When the last page reached the fake (monotonic), carried out whether answered or not."""
    people = {"D" + user[1:] for drill in drills for user in drill.users}
    return max(
        call.at
        for call in slack.calls_to("chat.postMessage")
        if call.args.get("channel") in people
        and str(call.args.get("text", "")).startswith("Paging you for")
        and call.status == 200
        and call.error is None
    )


def run_mode(mode: str, outage_s: float, workdir: Path) -> Result:
    demo = start_demo(workdir, f"demo-{mode}")
    drills: list[DrillBot] = []
    try:
        with SlackFake(bot_token=BOT_TOKEN) as slack:
            main = start_drill_bot(workdir / f"{mode}-main", slack, service_url=demo.url)
            drills.append(main)
            slack.fault(mode, seconds=outage_s, status=503, retry_after=5)
            for summary in ("checkout answers 500", "payments queue stuck", "search corrupt"):
                main.escalate(summary)
            demo.set_faults(healthz_status=503)
            main.command("/escalate", "status")
            main.command("/health", "staging")
            late = start_drill_bot(workdir / f"{mode}-late", slack)
            drills.append(late)
            late.escalate("started during the outage")
            slack.wait_for(lambda f: not f.faulty, timeout=outage_s + 60)
            healed = slack.faults[-1].ended
            assert healed is not None
            for drill in drills:
                drill.settle(timeout=outage_s + 300)
            settled = time.monotonic()
            due = {(r.subject, r.user_id, d.tag) for d in drills for r in d.page_rows()}
            pages = [(key, count, d.tag) for d in drills for key, count in d.pages().items()]
            delivered = {(subject, user, tag) for (subject, user), _, tag in pages}
            duplicates = sum(count - 1 for _, count, _ in pages)
            for drill in drills:
                duplicates += sum(c - 1 for c in drill.cards().values())
                duplicates += sum(c - 1 for c in drill.thread_lines().values())
            lines = [
                f"{len(d.log_lines('unreachable since'))}/{len(d.log_lines('reachable again'))}"
                for d in drills
            ]
            return Result(
                mode=mode,
                due=len(due),
                delivered=len(due & delivered),
                duplicates=duplicates + max(0, main.alert_posts() - 1),
                alert_posts=main.alert_posts(),
                last_page_after_s=last_page_at(slack, drills) - healed,
                settled_after_s=settled - healed,
                max_ack_ms=1000 * max(a for d in drills for a in d.acks),
                log_lines=" ".join(lines),
            )
    finally:
        for drill in drills:
            drill.bot.http.close()
            stop_process(drill.bot.process)
        stop_process(demo.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=90.0, help="seconds each fault lasts")
    parser.add_argument("--modes", nargs="+", default=list(FAULT_MODES), choices=FAULT_MODES)
    args = parser.parse_args()
    print(
        f"# delivery through Slack faults: {args.outage:g} s outage per mode, 3 incidents + a "
        f"Critical alert's incident on 3 s levels, and a bot started mid-outage\n"
        f"# {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs"
    )
    header = (
        "| fault | pages delivered / due | duplicates | alert posts | last page after "
        "recovery | outboxes empty after | slowest ack | outage log lines (down/up per bot) |"
    )
    print(header)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory(prefix="delivery-faults-") as tmp:
        for mode in args.modes:
            r = run_mode(mode, args.outage, Path(tmp))
            print(
                f"| {r.mode} | {r.delivered} / {r.due} | {r.duplicates} | {r.alert_posts} | "
                f"{r.last_page_after_s:.1f} s | {r.settled_after_s:.1f} s | "
                f"{r.max_ack_ms:.0f} ms | {r.log_lines} |",
                flush=True,
            )
    sys.exit(0)


if __name__ == "__main__":
    main()
