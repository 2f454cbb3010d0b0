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
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


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


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling, and with an optional readiness event.

    uvicorn.Server.serve() replaces the SIGINT/SIGTERM handlers while it runs and re-raises
    the captured signal afterwards; the embedding process owns those signals instead.
    """

    def __init__(self, config: uvicorn.Config, ready: asyncio.Event | None = None) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)
        self._ready = ready

    # uvicorn wakes every 0.1 s to see whether it should stop; this one wakes once a second
    # (the Date header's pace) and at once when told to stop.
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
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick refreshes the Date header at each 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)

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
