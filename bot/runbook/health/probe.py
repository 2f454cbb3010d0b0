"""HTTP GETs for health checks: on their own thread and loop, timed the way the service saw them.

Why aiohttp and a thread of their own (measured, see README "Benchmarks"):

- httpx's async connection pool degrades with concurrency: 600 concurrent GETs of 200/50 ms
  endpoints took 5–7 s with httpx's defaults or unlimited limits, 0.3 s with aiohttp and no
  connection limit. httpx on aiohttp's transport (httpx-aiohttp) is as fast, but maps a
  refused connection to a ConnectTimeout, and the timing hooks below are aiohttp's anyway.
- A fan-out on the bot's main loop delays every ack behind it; on this loop it cannot.
- The latency is the service's: from the request's headers going out to the response's
  headers coming back (aiohttp's TraceConfig hooks), so neither a wait for a connection slot
  nor the connect counts. The timeout starts once a slot is held, so waiting for one is never
  taken for a dead host either.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import json
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp

from bot.loop_thread import LoopThread

T = TypeVar("T")

# Requests in flight at once, over all checks: 3 per environment, so 200 environments go out
# in one wave. Past it, probes wait for a slot, and the wait counts neither as latency nor
# against the timeout. Each is a socket; this stays well under the usual 1,024 descriptors.
MAX_CONNECTIONS = 600
# A health body is a few kB; a misbehaving endpoint must not make the checker read gigabytes.
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Probe:
    """One HTTP GET as the check saw it: either an answer or the reason there was none."""

    url: str
    status_code: int | None = None
    latency_ms: float | None = None
    body: str = ""
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.error is None and self.status_code is not None

    def json(self) -> Any:
        return json.loads(self.body)


class _Timing:
    """Filled in by the trace hooks of one request (a retry on a fresh connection restarts it)."""

    def __init__(self) -> None:
        self.sent: float | None = None
        self.answered: float | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.sent is None or self.answered is None:
            return None
        return (self.answered - self.sent) * 1000


async def _on_headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    ctx.trace_request_ctx.sent = time.perf_counter()
    ctx.trace_request_ctx.answered = None


async def _on_response_headers(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    # on_request_end fires once the status line and headers are parsed, before the body.
    ctx.trace_request_ctx.answered = time.perf_counter()


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_on_headers_sent)
    trace.on_request_end.append(_on_response_headers)
    return trace


class Prober:
    """A thread with its own event loop and HTTP session, where every health probe runs.

    `start()` before use, `close()` after (or use it as a context manager). `submit` runs a
    coroutine on the probe loop from any thread; `get` must run on that loop.
    """

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self.max_connections = max_connections
        self._thread = LoopThread("health-probes")
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._thread.submit(self._open()).result()

    def close(self) -> None:
        if self._session is not None:
            # Past the wait the loop goes away anyway, and stop() cancels what is left.
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self._thread.submit(self._close()).result(timeout=5)
        self._thread.stop()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return self._thread.submit(work)

    async def _open(self) -> None:
        # No limit in the connector: the semaphore is the limit, taken before the clock starts.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[_trace_config()],
            auto_decompress=True,
            # No timeout of aiohttp's own (its default: 5 minutes in total, 30 s to connect,
            # a timer per request): `get`'s timeout, the runbook's, is the only one.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None),
            # A health check sends no cookies and keeps none: the jar's filtering and updating
            # on every request was ~15 % of aiohttp's CPU for 3,000 requests (measured A/B).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._slots = asyncio.Semaphore(self.max_connections)

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, timeout_s: float) -> Probe:
        """`get` from any event loop: the request runs on the probe thread (a deploy's verify)."""
        return await asyncio.wrap_future(self.submit(self.get(url, timeout_s)))

    async def get(self, url: str, timeout_s: float) -> Probe:
        """GET url, bounded by timeout_s in total once a connection slot is held."""
        assert self._session is not None and self._slots is not None, "Prober not started"
        timing = _Timing()
        async with self._slots:
            try:
                async with asyncio.timeout(timeout_s):
                    async with self._session.get(
                        url, allow_redirects=False, trace_request_ctx=timing
                    ) as response:
                        status = response.status
                        body = await _read_body(response)
                        encoding = _encoding(response.charset)
            except TimeoutError:
                return Probe(url, error=f"no answer within {timeout_s * 1000:.0f} ms")
            except aiohttp.ClientConnectorError as exc:
                return Probe(url, error=connect_error(exc))
            except _BodyTooLarge:
                return Probe(url, error=f"answered with more than {MAX_BODY_BYTES:,} bytes")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return Probe(url, error=f"request failed: {type(exc).__name__}")
        text = body.decode(encoding, errors="replace")
        return Probe(url, status_code=status, latency_ms=timing.latency_ms, body=text)


def _encoding(charset: str | None) -> str:
    """The body's declared charset if Python knows it, else UTF-8 (what JSON and Prometheus use)."""
    if charset:
        with contextlib.suppress(LookupError):
            return codecs.lookup(charset).name
    return "utf-8"


class _BodyTooLarge(Exception):
    pass


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, up to MAX_BODY_BYTES. Read to the end, the connection can be reused."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BodyTooLarge
    return bytes(body)


def connect_error(exc: aiohttp.ClientConnectorError) -> str:
    """Name the cause an engineer acts on, from the OSError under the client's exception."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name does not resolve"
    cause: BaseException | None = exc.os_error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name does not resolve"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect: {cause.strerror.lower()}"
        cause = cause.__cause__ or cause.__context__
    return "cannot connect"
