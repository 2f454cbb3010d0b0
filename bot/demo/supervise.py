"""A tiny service manager for the demo EventMesh service: the embedded default's systemctl.

    python -m bot.demo.supervise start   --install-dir DIR --state FILE [--port N] [--host H]
                                         [--log-file LOG]
    python -m bot.demo.supervise stop    --state FILE
    python -m bot.demo.supervise restart --install-dir DIR --state FILE [--port N] [--host H]
                                         [--log-file LOG]
    python -m bot.demo.supervise status  --state FILE

`start` runs `<install-dir>/bin/eventmesh-api` — whatever release the `current` link points at
— detached (own session, output to FILE's .log), records its pid and port in FILE and returns
at once, like `systemctl start`: whether the service came up healthy is for the caller to
verify. The port is kept in FILE, so a restart serves on the same one; the first start takes
--port, or a free port when that one is busy. `stop` sends SIGTERM, then SIGKILL after 10 s.
--log-file is handed to the service: its log, in the runbook's format (/health diagnose, logs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bot.webserver import PortInUse, bind

STOP_GRACE_S = 10.0
DEFAULT_PORT = 8080


@dataclass
class ServiceState:
    pid: int | None
    port: int | None
    host: str = "127.0.0.1"

    @classmethod
    def read(cls, path: Path) -> ServiceState:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return cls(None, None)
        pid, port = data.get("pid"), data.get("port")
        return cls(
            pid if isinstance(pid, int) else None,
            port if isinstance(port, int) else None,
            str(data.get("host") or "127.0.0.1"),
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_text(json.dumps({"pid": self.pid, "port": self.port, "host": self.host}))
        temporary.replace(path)

    @property
    def url(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.port else None


def running(pid: int | None) -> bool:
    """Alive and really a demo service (a recycled pid is not ours); a zombie is not alive."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return "demo-service" in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _port_free(host: str, port: int) -> bool:
    try:
        bind(host, port).close()
    except PortInUse:
        return False
    return True


def _choose_port(host: str, recorded: int | None, wanted: int) -> int:
    """The port of the last run (a restart keeps its URL), else --port, else any free one."""
    for port in (recorded, wanted):
        if port is not None and _port_free(host, port):
            return port
    sock = bind(host, 0)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def start(
    state_file: Path, install_dir: Path, host: str, port: int, log_file: Path | None = None
) -> str:
    state = ServiceState.read(state_file)
    if running(state.pid):
        return f"already running (pid {state.pid}) on {state.url}"
    launcher = install_dir / "bin" / "eventmesh-api"
    if not launcher.exists():
        raise SystemExit(f"start: {launcher} does not exist (nothing installed yet)")
    chosen = _choose_port(host, state.port, port)
    log = state_file.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log_args = ["--log-file", str(log_file)] if log_file is not None else []
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(launcher), "--host", host, "--port", str(chosen), *log_args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the caller's process group: it outlives the call
        )
    ServiceState(process.pid, chosen, host).write(state_file)
    return f"started pid {process.pid} on http://{host}:{chosen} from {launcher}"


def stop(state_file: Path) -> str:
    state = ServiceState.read(state_file)
    if not running(state.pid):
        ServiceState(None, state.port, state.host).write(state_file)
        return "not running"
    assert state.pid is not None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while running(state.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the process to exit, as systemctl stop does
    if running(state.pid):
        os.kill(state.pid, signal.SIGKILL)
        while running(state.pid):
            time.sleep(0.05)
    ServiceState(None, state.port, state.host).write(state_file)
    return f"stopped pid {state.pid}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.demo.supervise", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "restart", "status"])
    parser.add_argument("--state", type=Path, required=True, help="pid/port file")
    parser.add_argument("--install-dir", type=Path, help="serve <install-dir>/bin/eventmesh-api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--log-file", type=Path, help="the service's own log")
    args = parser.parse_args(argv)
    if args.action in ("start", "restart") and args.install_dir is None:
        parser.error(f"{args.action} needs --install-dir")
    try:
        if args.action == "status":
            state = ServiceState.read(args.state)
            alive = running(state.pid)
            print(f"{'running pid ' + str(state.pid) if alive else 'stopped'} {state.url or ''}")
            return 0 if alive else 3
        if args.action in ("stop", "restart"):
            print(stop(args.state))
        if args.action in ("start", "restart"):
            print(start(args.state, args.install_dir, args.host, args.port, args.log_file))
    except (OSError, PortInUse) as exc:
        print(f"{args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
