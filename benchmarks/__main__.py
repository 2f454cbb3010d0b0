"""Every benchmark in one run, written to benchmarks/results.md (`./scripts/bench`).

Each benchmark runs as its own process, one after the other (never two at once: they would
measure each other), with the exact command recorded. results.md gets the machine (cores,
memory, Python), the date, the load average before and after each benchmark, the headline
figures side by side with their anchors from the same run and their goals, then each
benchmark's own output in full. A benchmark that fails is recorded as failed (its stderr's
tail) and the others still run.

    ./scripts/bench                       # everything (about 25 minutes)
    ./scripts/bench --only upload alerts_idle   # re-runs these, keeps the others' last runs
    ./scripts/bench --list

Each run's record is kept in benchmarks/results.json, so `--only` replaces the benchmarks it
names and results.md still shows the others from their last run (with their own date and load).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.md"
RECORDS = ROOT / "benchmarks" / "results.json"


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    what: str


BENCHES = (
    Bench("alerts_idle", ("--profile", "{tmp}/idle.raw"), "the bot at rest, and alert latency"),
    Bench("upload", ("--size-mb", "200", "--rounds", "5"), "200 MB to a loopback sshd vs scp"),
    Bench(
        "health_fanout",
        (
            "--environments",
            "1000",
            "--rounds",
            "3",
            "--loop-sample",
            "20",
            "--profile",
            "{tmp}/fanout.raw",
        ),
        "/health all over 1,000 environments vs the runbook's curl loop",
    ),
    Bench("ack_latency", ("--under-load",), "acks of 50 concurrent /health vs a naive Bolt app"),
    Bench("watch_load", (), "a report's latency while 0, 20, 50 watches run"),
    Bench("http_transports", (), "the probe's HTTP client choice"),
    Bench("checking_failover", ("--interval", "3s"), "the checking lease's take-over"),
    Bench("delivery_faults", ("--outage", "30"), "pages through Slack faults"),
)


@dataclass
class Ran:
    bench: Bench
    started: str  # UTC
    command: str
    seconds: float
    load_before: float
    load_after: float
    status: int
    stdout: str
    stderr: str


def machine() -> list[str]:
    memory = psutil.virtual_memory()
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{memory.total / 2**30:.1f} GiB memory ({memory.available / 2**30:.1f} GiB free at "
        f"the start), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; commit {git_head()}",
    ]


def git_head() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    return out[:90] or "?"


def run_one(bench: Bench, tmp: Path) -> Ran:
    argv = [sys.executable, "-m", f"benchmarks.{bench.name}"]
    argv += [arg.format(tmp=tmp) for arg in bench.args]
    shown = shlex.join([".venv/bin/python", *argv[1:]])
    print(f"== {bench.name}: {shown}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    ran = Ran(
        bench,
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        shown,
        time.monotonic() - started,
        load_before,
        os.getloadavg()[0],
        done.returncode,
        done.stdout,
        done.stderr,
    )
    verdict = "done" if done.returncode == 0 else f"FAILED ({done.returncode})"
    print(f"   {verdict} in {ran.seconds:.0f} s", file=sys.stderr, flush=True)
    return ran


def figure(text: str, pattern: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else "(not in this run)"


def row_cells(text: str, starts: str) -> list[str] | None:
    """The cells of the first table row whose first cell starts with `starts`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(starts):
            return cells
    return None


def headline(runs: dict[str, Ran]) -> list[str]:
    """The issue's four figures, each beside its anchor from the same run and its goal."""
    rows = ["| figure | ours | anchor (same run) | goal |", "| --- | --- | --- | --- |"]
    if (idle := runs.get("alerts_idle")) and idle.status == 0:
        cpu = figure(idle.stdout, r"^\| CPU over the window \| ([^|]+)")
        rss = figure(idle.stdout, r"^\| peak RSS over the window \| ([^|]+)")
        wakes = figure(idle.stdout, r"^\| wake-ups[^|]*\| ([^|]+)")
        rows.append(f"| idle, 4 environments every 15 s: CPU | {cpu} | - | < 1 % of a core |")
        rows.append(f"| idle: peak RSS | {rss} | - | < 120 MiB |")
        rows.append(
            f"| idle: wake-ups of the main thread | {wakes} | - | none when nothing is due |"
        )
    if (up := runs.get("upload")) and up.status == 0:
        ours = row_cells(up.stdout, "transport as /deploy uses it")
        scp = row_cells(up.stdout, "OpenSSH scp -c aes128-gcm@openssh.com (the anchor)")
        scp_open = row_cells(up.stdout, "OpenSSH scp -c aes128-gcm@openssh.com, connection open")
        if ours and scp and scp_open:
            rows.append(
                f"| upload, 200 MB to a loopback sshd (best; as /deploy: connection open, sha256 "
                f"known) | {ours[3]} = {ours[6]} × scp; {ours[8]} × scp on an open connection "
                f"| scp -c aes128-gcm@openssh.com: {scp[3]} (new connection), {scp_open[3]} "
                "(open) | ≥ 0.95 × scp on the same cipher |"
            )
    if (fan := runs.get("health_fanout")) and fan.status == 0:
        ours = figure(fan.stdout, r"^\| `/health all`, cold connections[^|]*\| ([^|]+)\|")
        loop = figure(fan.stdout, r"^\| runbook's loop[^|]*\| ([^|]+)\|")
        reports = figure(fan.stdout, r"reports: (.+)$")
        rows.append(
            f"| `/health all` over 1,000 environments (median; max) | {ours}; reports: "
            f"{reports} | the runbook's curl loop: {loop} | within 2 s, all classed right |"
        )
    if (ack := runs.get("ack_latency")) and ack.status == 0:
        ours = figure(ack.stdout, r"^\| \*\*ours\*\* \| pooled \|(?:[^|]*\|){3} ([^|]+)\|")
        naive = figure(ack.stdout, r"^\| \*\*naive\*\* \| pooled \|(?:[^|]*\|){3} ([^|]+)\|")
        floor = figure(ack.stdout, r"^the client's floor .*?p99 ([^,]+),")
        rows.append(
            f"| ack p99 of 50 concurrent `/health` under load (alert storm, a `/deploy` uploading "
            f"over the loopback sshd, `/health all` over 252) | {ours} | naive Bolt app: {naive}; "
            f"a server that answers at once (the client's floor): {floor} | < 100 ms |"
        )
    return rows


def write_results(runs: list[Ran], header: list[str], load_start: float) -> None:
    by_name = {ran.bench.name: ran for ran in runs}
    lines = [
        "# Benchmark results",
        "",
        "Written by `./scripts/bench` (benchmarks/__main__.py).",
        "",
    ]
    lines += header
    lines.append(
        f"- load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at "
        "the end; per benchmark below. A busy machine slows everything; each figure's anchor "
        "ran in the same run, interleaved where the benchmark allows, so compare those."
    )
    lines += ["", "## Headline figures", "", *headline(by_name), "", "## Runs", ""]
    lines += ["| benchmark | started | command | took | load before → after | result |"]
    lines += ["| --- | --- | --- | ---: | --- | --- |"]
    for ran in runs:
        result = "ok" if ran.status == 0 else f"failed ({ran.status})"
        lines.append(
            f"| {ran.bench.name} | {ran.started} | `{ran.command}` | {ran.seconds:.0f} s | "
            f"{ran.load_before:.2f} → {ran.load_after:.2f} | {result} |"
        )
    for ran in runs:
        lines += ["", f"## {ran.bench.name}: {ran.bench.what}", "", f"`{ran.command}`", ""]
        if ran.status == 0:
            lines.append(ran.stdout.rstrip())
        else:
            tail = "\n".join(ran.stderr.rstrip().splitlines()[-25:])
            lines += ["Failed; the end of its stderr:", "", "```", tail, "```"]
    RESULTS.write_text("\n".join(lines) + "\n")


def kept_runs(exclude: set[str]) -> list[Ran]:
    """The last recorded runs of the benchmarks not run now."""
    if not RECORDS.exists():
        return []
    known = {bench.name: bench for bench in BENCHES}
    kept = []
    for record in json.loads(RECORDS.read_text()):
        name = record["bench"]["name"]
        if name in known and name not in exclude:
            kept.append(Ran(**{**record, "bench": known[name]}))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./scripts/bench", description=__doc__.splitlines()[0])
    names = [bench.name for bench in BENCHES]
    parser.add_argument("--only", nargs="+", choices=names, help="run these benchmarks only")
    parser.add_argument("--list", action="store_true", help="say what would run, then stop")
    args = parser.parse_args(argv)
    chosen = [bench for bench in BENCHES if not args.only or bench.name in args.only]
    if args.list:
        for bench in chosen:
            print(f"{bench.name}: {bench.what}")
        return 0
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"eventmesh-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    header, load_start = machine(), os.getloadavg()[0]
    runs = kept_runs(exclude={bench.name for bench in chosen})
    runs += [run_one(bench, tmp) for bench in chosen]
    runs.sort(key=lambda ran: [bench.name for bench in BENCHES].index(ran.bench.name))
    RECORDS.write_text(json.dumps([dataclasses.asdict(ran) for ran in runs], indent=1) + "\n")
    write_results(runs, header, load_start)
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return 0 if all(ran.status == 0 for ran in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
