"""Serving an ASGI app with uvicorn inside the bot's own event loop.

The bot runs several things in one loop (the Slack listener, workers, the console, the demo
service), so it owns the process's signals and its sockets: uvicorn gets a socket that is
already bound — a busy port is then a clear error before anything starts — and does not
install signal handlers of its own.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class PortInUse(Exception):
    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(host, port, exc.strerror or str(exc)) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def bind_preferring(host: str, port: int) -> socket.socket:
    """Bind port if it is free, otherwise any free port (the console's default)."""
    try:
        return bind(host, port)
    except PortInUse:
        return bind(host, 0)


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the embedding process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def embedded_server(app: ASGIApp, log_level: str = "warning") -> EmbeddedServer:
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", log_level=log_level.lower()
    )
    return EmbeddedServer(config)
