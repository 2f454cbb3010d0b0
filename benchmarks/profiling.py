"""py-spy around a benchmark's bot: where its CPU went, in a few lines for the results.

py-spy is installed for profiling only (`.venv/bin/pip install py-spy`), never a dependency
of the bot; without it (or without ptrace rights) the benchmarks run and say so.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy recording pid for `seconds` into `out` (raw, collapsed stacks), if installed.

    Stop it early with stop_profile (py-spy writes what it has on SIGINT)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("--profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return None
    argv = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100"]
    argv += ["-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(raw: Path, top: int = 8) -> list[str]:
    """The frames most busy samples passed through (inclusive), from py-spy's raw output."""
    if not raw.exists():
        return ["(no profile written: py-spy needs ptrace rights on the bot's process)"]
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        for frame in set(stack.split(";")):
            name = frame.split(" (")[0]
            if "(bot/" in frame or "(handlers/" in frame:
                counts[name] = counts.get(name, 0) + int(samples)
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
    return [f"{total} busy samples at 100 Hz"] + [
        f"{n / total * 100:5.1f} %  {name}" for name, n in ranked if total
    ]


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    """End a recording now; py-spy writes its file on SIGINT."""
    if spy is None:
        return
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
