"""Slack's Socket Mode WebSocket endpoint on a real loopback port, so Socket Mode runs offline.

The bot keeps slack_sdk's real ``SocketModeClient``: it asks the ``SlackFake`` for a URL with
``apps.connections.open`` (app-level token), connects here with aiohttp, gets Slack's
``hello``, and receives the envelopes a test pushes. The endpoint behaves like Slack's where
the client can tell: single-use tickets in the URL, ``hello`` on connect, pongs for the
client's pings, pings of its own, ``disconnect`` frames asking for a refresh. Every ack the
bot sends back is recorded, and tests wait for it on a condition, never by polling.

aiohttp's server runs on its own event loop in a daemon thread; test-facing methods are plain
blocking calls from the test thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, parse_qsl

from aiohttp import WSMsgType, web

from tests.support.slack_signing import block_actions_body, event_callback_body, slash_command_body
from tests.support.waiting import wait_on

T = TypeVar("T")

APP_ID = "A0APP"
LINK_PATH = "/link/"
SEND_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 15.0  # closing waits up to aiohttp's 10 s for each client's close reply


@dataclass
class Connection:
    """One WebSocket session, from the upgrade to the close (``closed_at`` set)."""

    number: int
    ticket: str
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    client_pings: int = 0
    pongs: list[bytes] = field(default_factory=list)
    ws: web.WebSocketResponse | None = field(default=None, repr=False)

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class Envelope:
    """What the fake pushed: ``sent_at`` is ``time.monotonic()`` just before the frame left."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection: int
    sent_at: float


@dataclass
class Ack:
    """The client's answer to one envelope; ``payload`` is None for a bare ack."""

    envelope_id: str
    payload: dict[str, Any] | None
    connection: int
    at: float


class SocketModeFake:
    """Slack's Socket Mode server for one app, on ``ws://127.0.0.1:<free port>``.

    Attach it to a ``SlackFake`` (``slack.socket_mode = fake``) so ``apps.connections.open``
    answers with a fresh ticket URL here. State is guarded by one condition variable, notified
    on every connection, frame and close, which is what lets the ``wait_*`` methods block
    without polling.
    """

    def __init__(self, app_id: str = APP_ID) -> None:
        self.app_id = app_id
        self.connections: list[Connection] = []
        self.envelopes: dict[str, Envelope] = {}
        self.acks: dict[str, Ack] = {}
        self.rejected: list[str] = []
        self._cond = threading.Condition(threading.RLock())
        self._tickets: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SocketModeFake:
        """Serve on a free loopback port from a daemon thread with its own event loop."""
        if self._loop is not None:
            raise RuntimeError("SocketModeFake already started")
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="socket-mode-fake", daemon=True
        )
        self._thread.start()
        self._loop = loop
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = int(sock.getsockname()[1])
        self._run(self._serve(sock))
        return self

    def stop(self) -> None:
        """Close open sessions as a server going away (1001), stop serving (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown(), SHUTDOWN_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = self._runner = None

    def __enter__(self) -> SocketModeFake:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``ws://127.0.0.1:<port>`` of the running fake."""
        if self._port is None or self._loop is None:
            raise RuntimeError("SocketModeFake is not started")
        return f"ws://127.0.0.1:{self._port}"

    # -- called by SlackFake's apps.connections.open ---------------------------------------

    def connection_url(self) -> str:
        """A WebSocket URL with a new single-use ticket, shaped like Slack's ``/link/`` URLs."""
        ticket = str(uuid.uuid4())
        with self._cond:
            self._tickets.add(ticket)
        return f"{self.base_url}{LINK_PATH}?ticket={ticket}&app_id={self.app_id}"

    # -- test-facing helpers ---------------------------------------------------------------

    def wait_for(self, predicate: Callable[[SocketModeFake], T], timeout: float = 10.0) -> T:
        """Block until ``predicate(fake)`` is truthy and return its value.

        Re-evaluated under the lock whenever a connection, frame or close arrives. On timeout
        raises AssertionError with a summary of what happened, for the failing test's report.
        """
        name = getattr(predicate, "__qualname__", repr(predicate))
        return wait_on(
            self._cond,
            lambda: predicate(self),
            timeout,
            f"SocketModeFake.wait_for({name})",
            self.summary,
        )

    def wait_for_connection(self, number: int = 1, timeout: float = 10.0) -> Connection:
        """The ``number``-th session ever opened (1-based), once the client has connected."""
        return self.wait_for(
            lambda f: f.connections[number - 1] if len(f.connections) >= number else None,
            timeout,
        )

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        """The client's ack of ``envelope_id``, once it has arrived."""
        return self.wait_for(lambda f: f.acks.get(envelope_id), timeout)

    def current(self) -> Connection:
        """The newest open session: where Slack would deliver the next envelope."""
        with self._cond:
            for connection in reversed(self.connections):
                if connection.open:
                    return connection
        raise AssertionError(f"no open Socket Mode connection\n{self.summary()}")

    def push(
        self, type: str, payload: dict[str, Any], *, accepts_response_payload: bool
    ) -> Envelope:
        """Deliver one envelope with a fresh ``envelope_id`` on the newest open session."""
        connection = self.current()
        envelope = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=type,
            payload=payload,
            accepts_response_payload=accepts_response_payload,
            connection=connection.number,
            sent_at=time.monotonic(),
        )
        frame = {
            "envelope_id": envelope.envelope_id,
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        with self._cond:  # recorded first, so an ack can never precede its envelope
            self.envelopes[envelope.envelope_id] = envelope
        self._send(connection, json.dumps(frame))
        return envelope

    def slash_command(
        self,
        command: str,
        text: str,
        *,
        response_url: str,
        channel_id: str = "C0OPS",
        user_id: str = "U0USER",
    ) -> Envelope:
        """A slash command as Slack delivers it over a socket: the HTTP form as a JSON dict."""
        body = slash_command_body(
            command,
            text,
            user_id=user_id,
            channel_id=channel_id,
            response_url=response_url,
            api_app_id=self.app_id,
        )
        payload = dict(parse_qsl(body.decode(), keep_blank_values=True))
        return self.push("slash_commands", payload, accepts_response_payload=True)

    def block_actions(
        self,
        action_id: str,
        value: str,
        *,
        response_url: str,
        channel_id: str = "C0OPS",
        message_ts: str = "1700000000.000100",
        message: dict[str, Any] | None = None,
    ) -> Envelope:
        """A button click as an ``interactive`` envelope.

        Slack sets ``accepts_response_payload`` only where an ack can carry an answer (slash
        commands, view submissions, options); a block_actions ack cannot, so it is false.
        """
        body = block_actions_body(
            action_id,
            value,
            channel_id=channel_id,
            message_ts=message_ts,
            message=message,
            response_url=response_url,
            api_app_id=self.app_id,
        )
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        return self.push("interactive", payload, accepts_response_payload=False)

    def event(self, event: dict[str, Any]) -> Envelope:
        """An Events API event (e.g. ``app_home_opened_event()``) as an ``events_api`` envelope:
        the same ``event_callback`` body Slack POSTs in HTTP mode."""
        payload = json.loads(event_callback_body(event, api_app_id=self.app_id))
        return self.push("events_api", payload, accepts_response_payload=False)

    def request_refresh(self, reason: str = "refresh_requested") -> Connection:
        """Send Slack's ``disconnect`` frame on the newest session; return that session.

        Slack does this routinely (connections are recycled every few hours); the client is
        expected to open a new connection via ``apps.connections.open``.
        """
        connection = self.current()
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        self._send(connection, json.dumps(frame))
        return connection

    def ping(self, timeout: float = 5.0) -> Connection:
        """Ping the newest session as Slack does and wait for the client's pong."""
        connection = self.current()
        data = f"slack-fake-ping:{secrets.token_hex(4)}".encode()
        ws = connection.ws
        assert ws is not None
        self._run(ws.ping(data))
        self.wait_for(lambda _: data in connection.pongs, timeout)
        return connection

    def summary(self) -> str:
        """Human-readable log of sessions, envelopes, acks and rejections so far."""
        with self._cond:
            lines = [f"{len(self.connections)} connection(s):"]
            for c in self.connections:
                state = "open" if c.open else f"closed ({c.close_code})"
                lines.append(f"  #{c.number} {state}, {c.client_pings} client ping(s)")
            lines.append(f"{len(self.envelopes)} envelope(s):")
            for e in self.envelopes.values():
                ack = self.acks.get(e.envelope_id)
                answer = "no ack" if ack is None else f"acked after {ack.at - e.sent_at:.3f}s"
                brief = e.payload.get("command") or e.payload.get("type")
                lines.append(f"  {e.type} {brief} on #{e.connection}: {answer}")
            lines.append(f"{len(self.rejected)} rejection(s):")
            lines += [f"  {r}" for r in self.rejected]
            return "\n".join(lines)

    # -- the server (runs on the fake's loop) ----------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = SEND_TIMEOUT_S) -> T:
        """Run ``coro`` on the server's loop and wait for its result from this thread."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("SocketModeFake is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _send(self, connection: Connection, text: str) -> None:
        ws = connection.ws
        if ws is None or not connection.open:
            raise AssertionError(f"connection #{connection.number} is closed")
        self._run(ws.send_str(text))

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get(LINK_PATH, self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        with self._cond:
            sessions = [c.ws for c in self.connections if c.open and c.ws is not None]
        for ws in sessions:
            await ws.close(code=1001, message=b"server going away")
        if self._runner is not None:
            await self._runner.cleanup()

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._cond:
            valid = ticket in self._tickets
            self._tickets.discard(ticket)  # single use, like Slack's
            if not valid:
                self.rejected.append(f"connection with unknown or used ticket {ticket!r}")
                self._cond.notify_all()
        if not valid:
            return web.Response(status=401, text="invalid ticket")
        # autoping off: pings and pongs are answered and recorded here, as Slack sees them.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        with self._cond:
            connection = Connection(len(self.connections) + 1, ticket, time.monotonic(), ws=ws)
            self.connections.append(connection)
            num_connections = sum(c.open for c in self.connections)
            self._cond.notify_all()
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": num_connections,
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for message in ws:
                await self._receive(connection, ws, message.type, message.data)
        finally:
            with self._cond:
                connection.closed_at = time.monotonic()
                connection.close_code = ws.close_code
                self._cond.notify_all()
        return ws

    async def _receive(
        self, connection: Connection, ws: web.WebSocketResponse, kind: WSMsgType, data: Any
    ) -> None:
        if kind == WSMsgType.PING:
            await ws.pong(data)
            with self._cond:
                connection.client_pings += 1
                self._cond.notify_all()
        elif kind == WSMsgType.PONG:
            with self._cond:
                connection.pongs.append(bytes(data))
                self._cond.notify_all()
        elif kind == WSMsgType.TEXT:
            self._record_ack(connection, str(data))
        else:
            with self._cond:
                self.rejected.append(f"#{connection.number}: unexpected {kind.name} frame")
                self._cond.notify_all()

    def _record_ack(self, connection: Connection, text: str) -> None:
        """Keep an ack like Slack: by ``envelope_id``; anything else is the client's mistake."""
        with self._cond:
            try:
                frame = json.loads(text)
            except ValueError:
                frame = None
            envelope_id = frame.get("envelope_id") if isinstance(frame, dict) else None
            payload = frame.get("payload") if isinstance(frame, dict) else None
            if envelope_id not in self.envelopes:
                self.rejected.append(f"#{connection.number}: not an ack of ours: {text[:200]}")
            elif envelope_id in self.acks:
                self.rejected.append(f"#{connection.number}: second ack of {envelope_id}")
            elif payload is not None and not isinstance(payload, dict):
                self.rejected.append(f"#{connection.number}: ack payload not an object: {text}")
            else:
                self.acks[envelope_id] = Ack(
                    envelope_id, payload, connection.number, time.monotonic()
                )
            self._cond.notify_all()
