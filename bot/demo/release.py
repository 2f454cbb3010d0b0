"""A real release of the demo EventMesh service, for the embedded default's `local` environment.

The runbook builds `riptide-*` binaries with cargo; the embedded default builds this instead:
a small launcher, `eventmesh-api`, that starts the demo service (`eventmesh-bot demo-service`)
with the version stamped in. /deploy packages it, installs it into the release layout and
restarts the service from it, so /health then reports the new version. A version ending in
`-broken` builds a release whose service starts unhealthy — the automatic rollback's demo.

    python -m bot.demo.release version             prints a new version (0.2.<UTC timestamp>)
    python -m bot.demo.release build --out DIR     writes DIR/eventmesh-api ($EVENTMESH_VERSION)
    python -m bot.demo.release test FILE           checks a built launcher
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

LAUNCHER = "eventmesh-api"
BROKEN_SUFFIX = "-broken"
_VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")


def launcher_text(version: str, python: str = sys.executable) -> str:
    if _VERSION.fullmatch(version) is None:
        raise ValueError(f"{version!r} is not a version")
    extra = " --unhealthy" if version.endswith(BROKEN_SUFFIX) else ""
    return (
        "#!/bin/sh\n"
        f"# EventMesh demo service, release {version} (built by python -m bot.demo.release).\n"
        "# The embedded default's stand-in for the runbook's riptide-api binary.\n"
        f"exec {shlex.quote(python)} -m bot.cli demo-service "
        f'--version {shlex.quote(version)}{extra} "$@"\n'
    )


def build(out: Path, version: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / LAUNCHER
    target.write_text(launcher_text(version))
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def check(path: Path, version: str | None) -> list[str]:
    """What is wrong with a built launcher (nothing: an empty list)."""
    if not path.is_file():
        return [f"{path} does not exist (did the build run?)"]
    problems = []
    if not os.access(path, os.X_OK):
        problems.append(f"{path} is not executable")
    text = path.read_text()
    if version is not None and f"--version {shlex.quote(version)}" not in text:
        problems.append(f"{path} does not start version {version}")
    syntax = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    if syntax.returncode != 0:
        problems.append(f"{path} is not a valid sh script: {syntax.stderr.strip()}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.demo.release", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print a new version")
    make = sub.add_parser("build", help="write the launcher")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--version", default=os.environ.get("EVENTMESH_VERSION"))
    test = sub.add_parser("test", help="check a built launcher")
    test.add_argument("path", type=Path)
    test.add_argument("--version", default=os.environ.get("EVENTMESH_VERSION"))
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"0.2.{datetime.now(UTC):%Y%m%d%H%M%S}")
        return 0
    if args.command == "build":
        if not args.version or _VERSION.fullmatch(args.version) is None:
            print("build: give --version or set EVENTMESH_VERSION", file=sys.stderr)
            return 2
        target = build(args.out, args.version)
        print(f"built {target} (version {args.version})")
        return 0
    problems = check(args.path, args.version)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: {args.path} is an executable launcher of version {args.version}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
