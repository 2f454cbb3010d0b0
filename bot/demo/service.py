"""The simulated EventMesh service: what the embedded default and the test suite check against.

It answers like the runbook's EventMesh (`/healthz`, `/api/v1`, `/api/v1/status`, `/metrics`)
and takes faults at run time through `/admin/faults`, so a health check, a deploy's verify
step or an alert can be driven into every state the runbook describes over real HTTP.
Everything is per app instance (state, Prometheus registry), because several services run in
one test process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeGuard

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.demo.breakage import Breakage, split_breakage, start_port_holder
from bot.demo.service_log import LogLine, ServiceLog
from bot.webserver import bind, embedded_server

logger = logging.getLogger(__name__)

ComponentState = Literal["up", "down"]

# name -> critical? A critical component down makes the service unhealthy (503), any other
# one only degraded (200): the runbook's Unhealthy/Degraded split.
COMPONENTS: dict[str, bool] = {"api": True, "event_store": True, "redis": False, "workers": False}

# Paths that get their own metrics label; anything else is "other", so a scan of random
# URLs cannot grow the label set without bound.
_SERVICE_PATHS = frozenset({"/healthz", "/api/v1", "/api/v1/status", "/metrics"})
_REQUEST_LOG_SIZE = 1000
# A request held by an injected latency must not hold up the embedding process's exit.
_SHUTDOWN_GRACE_SECONDS = 1.0
# How often the process's CPU and memory are read for /metrics (see _LiveGauges).
PROCESS_SAMPLE_S = 1.0
MAX_TRAFFIC_RPS = 10_000
TRAFFIC_TICK_S = 0.05  # simulated requests are counted in batches this often


class FaultError(ValueError):
    """A POST /admin/faults body that cannot be applied; the message says what is wrong."""


@dataclass(frozen=True)
class Faults:
    """The injected faults; the defaults are a healthy service."""

    version: str
    latency_ms: int = 0
    # Per-path latency, instead of latency_ms for the paths it names: a service whose healthz is
    # slower than its API, as real ones are. A list is a pattern that the path's requests take
    # in turn ([700, 0]: every other one slow). A new map replaces the previous one.
    path_latency_ms: dict[str, int | list[int]] = field(default_factory=dict)
    error_rate: float = 0.0
    # Simulated client traffic: requests a second to /api/v1, counted in
    # eventmesh_http_requests_total and failing at error_rate like real ones (so a 3 % error
    # rate is measurable from /metrics), but not in the request log.
    traffic_rps: int = 0
    healthz_status: int | None = None
    components: dict[str, ComponentState] = field(
        default_factory=lambda: dict.fromkeys(COMPONENTS, "up")
    )
    metrics_down: bool = False
    status_down: bool = False

    def merged(self, changes: object) -> Faults:
        """A copy with `changes` applied, or FaultError listing every problem (nothing applied)."""
        if not isinstance(changes, dict):
            raise FaultError("faults must be a JSON object")
        problems: list[str] = []
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            check = _CHECKS.get(key)
            if check is None:
                problems.append(f"unknown fault {key!r} (known: {', '.join(sorted(_CHECKS))})")
                continue
            problem = check(value)
            if problem:
                problems.append(f"{key} {problem}")
            elif key == "components":
                updates[key] = {**self.components, **value}
            else:
                updates[key] = value
        if problems:
            raise FaultError("invalid faults: " + "; ".join(problems))
        return replace(self, **updates)

    def overall_status(self) -> str:
        """healthy / degraded / unhealthy from the components, as the runbook classifies."""
        down = [name for name, state in self.components.items() if state == "down"]
        if any(COMPONENTS[name] for name in down):
            return "unhealthy"
        return "degraded" if down else "healthy"


def _is_int(value: object) -> TypeGuard[int]:
    """JSON true/false arrive as bool, a subclass of int; they are not numbers here."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_latency(value: object) -> str | None:
    return None if _is_int(value) and value >= 0 else "must be an integer >= 0"


def _check_path_latency(value: object) -> str | None:
    if not isinstance(value, dict):
        return 'must be an object {"/path": milliseconds or [milliseconds, ...]}'
    bad_paths = sorted(str(p) for p in value if not (isinstance(p, str) and p.startswith("/")))
    if bad_paths:
        return f"has {bad_paths}: paths start with '/'"
    bad = sorted(p for p, ms in value.items() if not _latency_or_pattern(ms))
    return f"{bad} must be integers >= 0 or non-empty lists of them" if bad else None


def _latency_or_pattern(value: object) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_check_latency(ms) is None for ms in value)
    return _check_latency(value) is None


def _check_traffic(value: object) -> str | None:
    if _is_int(value) and 0 <= value <= MAX_TRAFFIC_RPS:
        return None
    return f"must be an integer from 0 to {MAX_TRAFFIC_RPS}"


def _check_error_rate(value: object) -> str | None:
    ok = (_is_int(value) or isinstance(value, float)) and 0 <= value <= 1
    return None if ok else "must be a number from 0 to 1"


def _check_healthz_status(value: object) -> str | None:
    ok = value is None or (_is_int(value) and 200 <= value <= 599)
    return None if ok else "must be an HTTP status from 200 to 599, or null"


def _check_version(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _check_components(value: object) -> str | None:
    if not isinstance(value, dict):
        return 'must be an object {name: "up"|"down"}'
    unknown = sorted(set(value) - set(COMPONENTS))
    if unknown:
        return f"has unknown {unknown} (known: {', '.join(COMPONENTS)})"
    bad = sorted(name for name, state in value.items() if state not in ("up", "down"))
    return f'{bad} must be "up" or "down"' if bad else None


def _check_bool(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "latency_ms": _check_latency,
    "path_latency_ms": _check_path_latency,
    "error_rate": _check_error_rate,
    "healthz_status": _check_healthz_status,
    "version": _check_version,
    "components": _check_components,
    "metrics_down": _check_bool,
    "status_down": _check_bool,
    "traffic_rps": _check_traffic,
}


class _DemoState:
    """One service's faults, request log and metrics."""

    def __init__(self, version: str, clock: Callable[[], float], broken: bool = False) -> None:
        self.initial_version = version
        self.clock = clock
        self.started_at = clock()
        # What DELETE /admin/faults returns to: a broken release stays broken without faults.
        self.baseline = Faults(version=version)
        if broken:
            self.baseline = self.baseline.merged({"components": {"event_store": "down"}})
        self.faults = self.baseline
        self.requests: deque[dict[str, Any]] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._error_fraction = Fraction(0)
        self._since_rate_set = 0
        self._latency_turns: dict[str, int] = {}
        self._traffic: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry()
        self.requests_total = Counter(
            "eventmesh_http_requests",
            "HTTP requests answered, by path and status code.",
            ["path", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "eventmesh_http_request_duration_seconds",
            "Time to answer an HTTP request, injected latency included.",
            ["path"],
            # Fewer than prometheus_client's 15 default buckets: a fleet check scrapes this
            # hundreds of times a second, and each bucket is a line to format per path.
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.registry.register(_LiveGauges(self))

    def set_faults(self, faults: Faults) -> None:
        """Install new faults; a new error rate or latency pattern restarts, so it is
        reproducible. Call it on the serving loop: simulated traffic runs there."""
        if faults.error_rate != self.faults.error_rate:
            # limit_denominator turns 0.29 back into 29/100, so the pattern is exact.
            self._error_fraction = Fraction(faults.error_rate).limit_denominator(1_000_000)
            self._since_rate_set = 0
        if faults.path_latency_ms != self.faults.path_latency_ms:
            self._latency_turns.clear()
        self.faults = faults
        if faults.traffic_rps and self._traffic is None:
            self._traffic = asyncio.get_running_loop().create_task(self._simulate_traffic())

    def latency_s(self, path: str) -> float:
        """This request's injected latency: the path's own (its pattern's next turn) or the
        service-wide one."""
        latency = self.faults.path_latency_ms.get(path, self.faults.latency_ms)
        if isinstance(latency, list):
            turn = self._latency_turns.get(path, 0)
            self._latency_turns[path] = turn + 1
            latency = latency[turn % len(latency)]
        return latency / 1000

    async def _simulate_traffic(self) -> None:
        """Clients' requests to /api/v1 at traffic_rps, until it is set back to 0."""
        owed, last = 0.0, time.monotonic()
        try:
            while self.faults.traffic_rps:
                await asyncio.sleep(TRAFFIC_TICK_S)
                now = time.monotonic()
                owed += self.faults.traffic_rps * (now - last)
                last = now
                for _ in range(int(owed)):
                    code = "500" if self.inject_error() else "200"
                    self.requests_total.labels(path="/api/v1", code=code).inc()
                owed -= int(owed)
        finally:
            self._traffic = None

    def inject_error(self) -> bool:
        """Whether this request fails: the n-th does when n * rate crosses an integer.

        Deterministic, so any k consecutive requests at rate p get floor or ceil of k*p
        errors, and tests need no randomness.
        """
        self._since_rate_set += 1
        n, rate = self._since_rate_set, self._error_fraction
        return n * rate.numerator // rate.denominator > (n - 1) * rate.numerator // rate.denominator


class _LiveGauges(Collector):
    """Values read at scrape time: the build version (a fault can change it) and psutil's view.

    psutil's view is read at most every PROCESS_SAMPLE_S: each reading opens files under /proc,
    which cost more than the rest of a scrape, and a fleet check scrapes hundreds of times a
    second (profiled: without this, psutil was a third of the service's CPU under /health all).
    """

    def __init__(self, state: _DemoState) -> None:
        self._state = state
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call only starts psutil's measuring interval
        self._sampled_at: float | None = None
        self._cpu_percent = 0.0
        self._memory_percent = 0.0

    def _sample(self) -> tuple[float, float]:
        now = time.monotonic()
        if self._sampled_at is None or now - self._sampled_at >= PROCESS_SAMPLE_S:
            self._sampled_at = now
            # psutil counts CPU time in scheduler ticks, so readings a few ms apart can read
            # more than the whole machine; a share of the machine is capped at 100.
            cpus = psutil.cpu_count() or 1
            self._cpu_percent = min(100.0, self._process.cpu_percent() / cpus)
            self._memory_percent = self._process.memory_percent()
        return self._cpu_percent, self._memory_percent

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("eventmesh_build_info", "Build information.", labels=["version"])
        info.add_metric([self._state.faults.version], 1)
        yield info
        cpu_percent, memory_percent = self._sample()
        yield GaugeMetricFamily(
            "eventmesh_process_cpu_percent",
            "CPU used by this process between readings, as a share of the whole machine.",
            value=cpu_percent,
        )
        yield GaugeMetricFamily(
            "eventmesh_process_memory_percent",
            "Resident memory of this process as a share of the machine's physical memory.",
            value=memory_percent,
        )


class _FaultInjection:
    """ASGI middleware: latency and errors for every non-admin request, then log and count it.

    Pure ASGI (not BaseHTTPMiddleware) so the status is read off the response as it is sent.
    """

    def __init__(self, app: ASGIApp, state: _DemoState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path == "/admin" or path.startswith("/admin/"):
            await self.app(scope, receive, send)
            return
        state = self.state
        started, t0 = time.time(), state.clock()
        status = 500  # what the client gets if the app raises before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            latency_s = state.latency_s(path)
            if latency_s:
                await asyncio.sleep(latency_s)
            if state.inject_error():
                injected = JSONResponse({"error": "injected"}, status_code=500)
                await injected(scope, receive, record_status)
            else:
                await self.app(scope, receive, record_status)
        finally:
            label = path if path in _SERVICE_PATHS else "other"
            state.requests_total.labels(path=label, code=str(status)).inc()
            state.duration.labels(path=label).observe(state.clock() - t0)
            state.requests.append(
                {"path": path, "started": started, "finished": time.time(), "status": status}
            )


class _FaultsPost:
    """POST /admin/faults: the lasting faults, and the one-off ones (bot/demo/breakage.py),
    all checked before any is applied."""

    def __init__(
        self, state: _DemoState, log: ServiceLog | None, on_exit: Callable[[int], None] | None
    ) -> None:
        self.state = state
        self.log = log
        self.on_exit = on_exit

    async def post(self, request: Request) -> Response:
        try:
            changes = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(changes, dict):
            return JSONResponse({"error": "faults must be a JSON object"}, status_code=400)
        once, lasting, problems = split_breakage(
            changes, can_exit=self.on_exit is not None, has_log=self.log is not None
        )
        try:
            faults = self.state.faults.merged(lasting)
        except FaultError as exc:
            problems.insert(0, str(exc).removeprefix("invalid faults: "))
        if problems:
            return JSONResponse({"error": "invalid faults: " + "; ".join(problems)}, 400)
        self.state.set_faults(faults)
        return await self._break(request, once, asdict(faults))

    async def _break(self, request: Request, once: Breakage, answer: dict[str, Any]) -> Response:
        """Write the requested lines, then start ending the service if asked to."""
        log = self.log
        if once.log and log is not None:
            answer["log_lines_written"] = await asyncio.to_thread(log.write, once.requested_lines())
        status = once.exit_status
        if status is None or self.on_exit is None:
            return JSONResponse(answer)
        host, port = request.scope["server"]
        if once.hold_port_s is not None:
            answer["holder_pid"] = start_port_holder(host, port, once.hold_port_s)
        if log is not None:
            await asyncio.to_thread(log.write, once.last_words(host, port))
        answer["exiting_with"] = status
        # After the answer is sent: the caller learns what happened, then the service goes.
        return JSONResponse(answer, background=BackgroundTask(self.on_exit, status))


def create_demo_app(
    version: str = "0.1.0",
    *,
    clock: Callable[[], float] = time.monotonic,
    broken: bool = False,
    log: ServiceLog | None = None,
    on_exit: Callable[[int], None] | None = None,
) -> Starlette:
    """A fresh service with its own state and metrics registry.

    `clock` (monotonic seconds) drives uptime and request durations, so tests can set it.
    `broken` starts it with a critical component down (healthz 503), as a bad release would.
    `log` is its log file (the `log` fault writes there); `on_exit(status)` ends the service
    (the `crash` and `hold_port` faults: bot/demo/breakage.py), after the answer is sent.
    """
    state = _DemoState(version, clock, broken)

    async def healthz(request: Request) -> Response:
        faults = state.faults
        status = faults.overall_status()
        code = 503 if status == "unhealthy" else 200
        if faults.healthz_status is not None:
            code = faults.healthz_status
            if code >= 400:
                status = "unhealthy"
        return JSONResponse({"status": status, "version": faults.version}, status_code=code)

    async def api_index(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "eventmesh",
                "version": state.faults.version,
                "endpoints": ["/healthz", "/api/v1/status", "/metrics"],
            }
        )

    async def api_status(request: Request) -> Response:
        faults = state.faults
        if faults.status_down:
            return JSONResponse({"error": "status unavailable (injected)"}, status_code=503)
        return JSONResponse(
            {
                "status": faults.overall_status(),
                "version": faults.version,
                "uptime_seconds": round(state.clock() - state.started_at, 3),
                "components": {
                    name: {"status": faults.components[name], "critical": critical}
                    for name, critical in COMPONENTS.items()
                },
            }
        )

    async def metrics(request: Request) -> Response:
        if state.faults.metrics_down:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    async def get_faults(request: Request) -> Response:
        return JSONResponse(asdict(state.faults))

    async def delete_faults(request: Request) -> Response:
        state.set_faults(state.baseline)
        return JSONResponse(asdict(state.faults))

    async def get_requests(request: Request) -> Response:
        return JSONResponse(list(state.requests))

    async def delete_requests(request: Request) -> Response:
        cleared = len(state.requests)
        state.requests.clear()
        return JSONResponse({"cleared": cleared})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/api/v1", api_index, methods=["GET"]),
            Route("/api/v1/status", api_status, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/faults", get_faults, methods=["GET"]),
            Route("/admin/faults", _FaultsPost(state, log, on_exit).post, methods=["POST"]),
            Route("/admin/faults", delete_faults, methods=["DELETE"]),
            Route("/admin/requests", get_requests, methods=["GET"]),
            Route("/admin/requests", delete_requests, methods=["DELETE"]),
        ],
        middleware=[Middleware(_FaultInjection, state=state)],
    )


async def serve_demo(
    host: str,
    port: int,
    version: str = "0.1.0",
    *,
    ready: asyncio.Event | None = None,
    broken: bool = False,
    log_file: Path | None = None,
) -> int | None:
    """Serve a demo service in the running event loop until cancelled, or until a fault ends it.

    Sets `ready` once it accepts connections. A port already in use raises OSError.
    Cancelling it stops accepting, lets requests in flight finish (at most
    _SHUTDOWN_GRACE_SECONDS) and then re-raises the cancellation. A `crash` or `hold_port`
    fault stops it the same way, and the exit status it asked for is returned.
    """
    sock = bind(host, port)
    log = ServiceLog(log_file) if log_file is not None else None
    ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def end(status: int) -> None:
        if not ended.done():
            ended.set_result(status)

    server = embedded_server(
        create_demo_app(version, broken=broken, log=log, on_exit=end),
        ready=ready,
        graceful_shutdown_s=_SHUTDOWN_GRACE_SECONDS,
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    address = sock.getsockname()[:2]
    logger.info("demo EventMesh service %s listening on %s", version, address)
    if log is not None:
        started = LogLine(
            "INFO", "server", "Listening", f"on {address[0]}:{address[1]} (v{version})"
        )
        await asyncio.to_thread(log.write, [started])
    try:
        await asyncio.wait([serving, ended], return_when=asyncio.FIRST_COMPLETED)
        if ended.done():
            server.should_exit = True  # stops accepting at once, then lets the answer go out
        await serving
        return ended.result() if ended.done() else None
    except asyncio.CancelledError:
        server.should_exit = True
        await serving
        raise
    finally:
        sock.close()


def run_demo_service(
    host: str, port: int, version: str, *, broken: bool = False, log_file: Path | None = None
) -> int:
    """Serve until Ctrl-C or SIGTERM (exit status 0), for `eventmesh-bot demo-service`, or
    until a `crash` or `hold_port` fault ends it (their status)."""

    async def serve_until_signalled() -> int:
        # Everything imported so far lives as long as the process: out of the collector's
        # sight, a full collection no longer stalls requests for tens of milliseconds.
        gc.freeze()
        serving = asyncio.create_task(
            serve_demo(host, port, version, broken=broken, log_file=log_file)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, serving.cancel)
        try:
            return await serving or 0
        except asyncio.CancelledError:
            return 0

    return asyncio.run(serve_until_signalled())


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago: good enough for tests and the console mode."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.bind(address)
        return int(probe.getsockname()[1])
