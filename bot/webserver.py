"""Serving an ASGI app with uvicorn inside the bot's own event loop.

The bot runs several things in one loop (the Slack listener, workers, the console, the demo
service), so it owns the process's signals and its sockets: uvicorn gets a socket that is
already bound — a busy port is then a clear error before anything starts, where uvicorn
itself would sys.exit(1) — and does not install signal handlers of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate

import uvicorn
from starlette.types import ASGIApp
from uvicorn.server import ServerState


class PortInUse(OSError):
    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one.

    It must come from getaddrinfo (proto IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only
    on sockets that say they are TCP, and without it every keep-alive response waits ~40 ms
    for a delayed ACK.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortInUse(host, port, f"cannot resolve {host!r}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise PortInUse(host, port, exc.strerror or str(exc)) from exc
    return sock


def bind_preferring(host: str, port: int) -> socket.socket:
    """Bind port if it is free, otherwise any free port (the console's default)."""
    try:
        return bind(host, port)
    except PortInUse:
        return bind(host, 0)


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class DatedServerState(ServerState):
    """uvicorn's shared server state, its default headers dated when a response reads them.

    uvicorn refreshes the Date header from its main loop once a second, which wakes an idle
    bot for nothing; here the headers are made when a request asks, at most once a second.
    """

    def __init__(self, config: uvicorn.Config, now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._config = config
        self._now = now
        self._dated_at = -1
        self._headers: list[tuple[bytes, bytes]] = []

    @property  # type: ignore[override]
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(self._now())
        if now != self._dated_at:
            self._dated_at = now
            date = [(b"date", formatdate(now, usegmt=True).encode())]
            self._headers = (date if self._config.date_header else []) + (
                self._config.encoded_headers
            )
        return self._headers

    @default_headers.setter
    def default_headers(self, _headers: list[tuple[bytes, bytes]]) -> None:
        pass  # uvicorn's own refresh (ServerState.__init__, on_tick): made when read instead


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling, and with an optional readiness event.

    uvicorn.Server.serve() replaces the SIGINT/SIGTERM handlers while it runs and re-raises
    the captured signal afterwards; the embedding process owns those signals instead.
    """

    def __init__(self, config: uvicorn.Config, ready: asyncio.Event | None = None) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)
        self.server_state = DatedServerState(config)
        self._ready = ready

    # uvicorn wakes every 0.1 s to refresh the Date header and see whether it should stop
    # (or has served limit_max_requests, which the bot never sets); this one sleeps until
    # told to stop, and the Date header is made per response (DatedServerState).
    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    async def main_loop(self) -> None:
        await self._exit.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._ready is not None:
            self._ready.set()


def embedded_server(
    app: ASGIApp, *, ready: asyncio.Event | None = None, graceful_shutdown_s: float | None = None
) -> EmbeddedServer:
    # log_level=None: uvicorn leaves its loggers' levels to the process's logging set-up.
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
    return EmbeddedServer(config, ready)
