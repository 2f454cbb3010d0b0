"""Another process on the demo service's port: the runbook's "Port already in use".

    python -m bot.demo.port_holder --host 127.0.0.1 --port 8080 --seconds 300

Waits until the port is free (the service is on its way out), takes it, and holds it for the
given time, closing every connection at once (as a stray program on the port would answer a
health check: not at all). It names itself `port-holder` (its process name, as ss, netstat
and ps show it), so a diagnosis can tell it from the service.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import socket
import sys
import time
from collections.abc import Sequence

NAME = b"port-holder"
WAIT_FOR_PORT_S = 15.0
PR_SET_NAME = 15


def rename() -> None:
    """Set this process's name (Linux's comm, what ss and ps show); elsewhere keep it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def take(host: str, port: int, wait_s: float) -> socket.socket:
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(16)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the service is still closing its socket


def hold(sock: socket.socket, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 1.0))
        try:
            connection, _ = sock.accept()
        except TimeoutError:
            continue
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.demo.port_holder", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    rename()
    try:
        sock = take(args.host, args.port, WAIT_FOR_PORT_S)
    except OSError as exc:
        print(f"port-holder: cannot take {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    with sock:
        hold(sock, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
