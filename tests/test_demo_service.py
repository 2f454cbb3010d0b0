"""The demo EventMesh service over real HTTP on loopback, faults injected through /admin."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from bot.demo.service import create_demo_app, find_free_port, serve_demo
from bot.demo.service_log import ServiceLog
from tests.conftest import clean_env, start_demo, stop_process
from tests.support.diagnose_env import start_logged_service, wait_for_listener

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


class RunningDemo:
    """serve_demo in a thread with its own event loop, the way an embedding process runs it."""

    def __init__(self, version: str = "0.1.0") -> None:
        self.port = find_free_port(HOST)
        self.url = f"http://{HOST}:{self.port}"
        self._version = version
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        ready = asyncio.Event()
        waiter = asyncio.create_task(ready.wait())
        waiter.add_done_callback(lambda _: self._started.set())
        await serve_demo(HOST, self.port, self._version, ready=ready)

    def start(self) -> RunningDemo:
        self._thread.start()
        assert self._started.wait(5), "demo service did not become ready"
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)
        assert not self._thread.is_alive(), "demo service did not stop when cancelled"


@pytest.fixture(scope="module")
def service() -> Iterator[RunningDemo]:
    running = RunningDemo().start()
    yield running
    running.stop()


@pytest.fixture
def client(service: RunningDemo) -> Iterator[httpx.Client]:
    """A client on a service reset to healthy with an empty request log."""
    with httpx.Client(base_url=service.url, timeout=5) as http:
        http.delete("/admin/faults").raise_for_status()
        http.delete("/admin/requests").raise_for_status()
        yield http


def set_faults(client: httpx.Client, **faults: object) -> dict[str, object]:
    response = client.post("/admin/faults", json=faults)
    assert response.status_code == 200, response.text
    return response.json()


def test_healthy_by_default(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "version": "0.1.0"}

    status = client.get("/api/v1/status").json()
    assert status["status"] == "healthy"
    assert status["uptime_seconds"] >= 0
    assert status["components"] == {
        "api": {"status": "up", "critical": True},
        "event_store": {"status": "up", "critical": True},
        "redis": {"status": "up", "critical": False},
        "workers": {"status": "up", "critical": False},
    }
    assert client.get("/api/v1").json()["endpoints"] == ["/healthz", "/api/v1/status", "/metrics"]


def test_non_critical_component_down_is_degraded(client: httpx.Client) -> None:
    set_faults(client, components={"redis": "down"})
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    status = client.get("/api/v1/status").json()
    assert status["status"] == "degraded"
    assert status["components"]["redis"] == {"status": "down", "critical": False}


def test_critical_component_down_is_unhealthy(client: httpx.Client) -> None:
    set_faults(client, components={"redis": "down"})
    faults = set_faults(client, components={"event_store": "down"})
    assert faults["components"] == {  # merged, not replaced
        "api": "up",
        "event_store": "down",
        "redis": "down",
        "workers": "up",
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "version": "0.1.0"}


def test_forced_healthz_status(client: httpx.Client) -> None:
    set_faults(client, healthz_status=503)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    set_faults(client, healthz_status=None)
    assert client.get("/healthz").status_code == 200


def test_latency_shows_in_request_log(client: httpx.Client) -> None:
    set_faults(client, latency_ms=200)
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/faults").status_code == 200  # admin: no latency, not logged
    [entry] = client.get("/admin/requests").json()
    assert entry["path"] == "/healthz"
    assert entry["status"] == 200
    assert entry["finished"] - entry["started"] >= 0.2


def test_path_latency_overrides_the_service_latency_for_its_paths(client: httpx.Client) -> None:
    faults = set_faults(client, latency_ms=50, path_latency_ms={"/healthz": 300})
    assert faults["path_latency_ms"] == {"/healthz": 300}
    client.get("/healthz")
    client.get("/api/v1/status")
    healthz, status = client.get("/admin/requests").json()
    assert healthz["finished"] - healthz["started"] >= 0.3
    assert 0.05 <= status["finished"] - status["started"] < 0.3
    # A new map replaces the old one: /healthz falls back to latency_ms.
    assert set_faults(client, path_latency_ms={})["path_latency_ms"] == {}


def test_a_latency_pattern_is_taken_in_turn_by_the_paths_requests(client: httpx.Client) -> None:
    set_faults(client, path_latency_ms={"/healthz": [300, 0]})
    for _ in range(4):
        client.get("/healthz")
        client.get("/api/v1/status")  # another path: not a turn of the pattern
    times = [
        r["finished"] - r["started"]
        for r in client.get("/admin/requests").json()
        if r["path"] == "/healthz"
    ]
    assert [t >= 0.3 for t in times] == [True, False, True, False]
    # A new pattern starts at its first turn.
    set_faults(client, path_latency_ms={"/healthz": [0, 300]})
    client.delete("/admin/requests")
    client.get("/healthz")
    (first,) = client.get("/admin/requests").json()
    assert first["finished"] - first["started"] < 0.3


def test_simulated_traffic_is_counted_and_fails_at_the_error_rate(client: httpx.Client) -> None:
    before = samples(client)
    set_faults(client, traffic_rps=2000, error_rate=0.1)

    def api(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], code: str) -> float:
        key = ("eventmesh_http_requests_total", (("code", code), ("path", "/api/v1")))
        return scrape.get(key, 0) - before.get(key, 0)

    def count() -> float:
        # A scrape fails one time in ten too (the error rate is the whole service's).
        while (response := client.get("/metrics")).status_code != 200:
            assert response.json() == {"error": "injected"}
        return api(parse_samples(response.text), "200")

    while count() < 500:  # a condition: traffic counted so far
        time.sleep(0.05)
    set_faults(client, traffic_rps=0, error_rate=0)
    after = samples(client)
    ok, errors = api(after, "200"), api(after, "500")
    # The pattern is shared with the scrapes above, a few requests among hundreds.
    assert abs(errors / (ok + errors) - 0.1) < 0.02
    # Not in the request log: that is for requests that came over HTTP.
    assert all(r["path"] != "/api/v1" for r in client.get("/admin/requests").json())


def test_slow_requests_are_served_concurrently(client: httpx.Client, service: RunningDemo) -> None:
    """Injected latency sleeps without blocking the loop: the bot's parallel checks rely on it."""
    set_faults(client, latency_ms=300)

    async def two_at_once() -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as http:
            await asyncio.gather(http.get("/healthz"), http.get("/api/v1/status"))

    asyncio.run(two_at_once())
    first, second = client.get("/admin/requests").json()
    assert first["started"] < second["finished"] and second["started"] < first["finished"]


def test_error_rate_is_exact(client: httpx.Client) -> None:
    set_faults(client, error_rate=0.5)
    responses = [client.get("/healthz") for _ in range(10)]
    failed = [r for r in responses if r.status_code == 500]
    assert len(failed) == 5
    assert all(r.json() == {"error": "injected"} for r in failed)
    assert {r.status_code for r in responses} == {200, 500}
    assert client.get("/admin/faults").status_code == 200  # admin paths never fail


def test_version_change(client: httpx.Client) -> None:
    set_faults(client, version="0.2.0")
    assert client.get("/healthz").json()["version"] == "0.2.0"
    assert client.get("/api/v1/status").json()["version"] == "0.2.0"
    assert samples(client)[("eventmesh_build_info", (("version", "0.2.0"),))] == 1


def samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one /metrics scrape, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.text)


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_code(client: httpx.Client) -> None:
    before = samples(client)
    for _ in range(3):
        client.get("/healthz")
    set_faults(client, healthz_status=503)
    for _ in range(2):
        client.get("/healthz")
    after = samples(client)

    def delta(code: str) -> float:
        key = ("eventmesh_http_requests_total", (("code", code), ("path", "/healthz")))
        return after[key] - before.get(key, 0)

    assert (delta("200"), delta("503")) == (3, 2)
    duration_count = ("eventmesh_http_request_duration_seconds_count", (("path", "/healthz"),))
    assert after[duration_count] - before.get(duration_count, 0) == 5
    assert after[("eventmesh_build_info", (("version", "0.1.0"),))] == 1
    assert 0 <= after[("eventmesh_process_cpu_percent", ())] <= 100
    assert 0 < after[("eventmesh_process_memory_percent", ())] < 100


def test_metrics_and_status_down(client: httpx.Client) -> None:
    set_faults(client, metrics_down=True, status_down=True)
    assert client.get("/metrics").status_code == 404
    assert client.get("/api/v1/status").status_code == 503
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body must be JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"latency_ms": -5}', "latency_ms must be an integer >= 0"),
        (b'{"error_rate": 1.5}', "error_rate must be a number from 0 to 1"),
        (b'{"healthz_status": "503"}', "healthz_status must be an HTTP status"),
        (b'{"components": {"kafka": "down"}}', "unknown ['kafka']"),
        (b'{"components": {"redis": "sideways"}}', 'must be "up" or "down"'),
        (b'{"metrics_down": 1}', "metrics_down must be true or false"),
        (b'{"latncy_ms": 10}', "unknown fault 'latncy_ms'"),
        (b'{"path_latency_ms": 200}', "path_latency_ms must be an object"),
        (b'{"path_latency_ms": {"healthz": 200}}', "paths start with '/'"),
        (b'{"path_latency_ms": {"/healthz": -1}}', "['/healthz'] must be integers >= 0"),
        (b'{"path_latency_ms": {"/healthz": true}}', "must be integers >= 0"),
        (b'{"path_latency_ms": {"/healthz": []}}', "non-empty lists of them"),
        (b'{"path_latency_ms": {"/healthz": [5, -1]}}', "non-empty lists of them"),
        (b'{"traffic_rps": -1}', "traffic_rps must be an integer from 0 to 10000"),
        (b'{"traffic_rps": 2.5}', "traffic_rps must be an integer"),
    ],
)
def test_invalid_faults_are_rejected_and_change_nothing(
    client: httpx.Client, body: bytes, message: str
) -> None:
    before = client.get("/admin/faults").json()
    # A valid key next to the bad one must not be applied either.
    if body.startswith(b"{") and body.endswith(b"}"):
        body = b'{"version": "9.9.9", ' + body[1:]
    response = client.post("/admin/faults", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get("/admin/faults").json() == before


def test_delete_resets_faults(client: httpx.Client) -> None:
    set_faults(
        client,
        latency_ms=10,
        error_rate=1,
        healthz_status=503,
        version="2.0.0",
        components={"api": "down"},
        metrics_down=True,
        status_down=True,
    )
    assert client.get("/healthz").status_code == 500
    reset = client.delete("/admin/faults").json()
    assert reset == client.get("/admin/faults").json()
    assert reset["version"] == "0.1.0" and reset["latency_ms"] == 0 and reset["error_rate"] == 0
    assert client.get("/healthz").json() == {"status": "healthy", "version": "0.1.0"}
    assert client.get("/metrics").status_code == 200
    assert len(client.get("/admin/requests").json()) == 3
    assert client.delete("/admin/requests").json() == {"cleared": 3}
    assert client.get("/admin/requests").json() == []


def test_uptime_follows_the_injected_clock() -> None:
    now = [100.0]
    app = create_demo_app("1.2.3", clock=lambda: now[0])
    now[0] = 142.5

    async def get_status() -> dict[str, object]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            return (await http.get("/api/v1/status")).json()

    status = asyncio.run(get_status())
    assert (status["version"], status["uptime_seconds"]) == ("1.2.3", 42.5)


def test_port_in_use_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        with pytest.raises(OSError):
            asyncio.run(serve_demo(HOST, taken.getsockname()[1]))


def test_embedded_service_leaves_signal_handlers_alone() -> None:
    """In the main thread, where uvicorn would otherwise take over SIGINT and SIGTERM."""

    async def embed() -> None:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        ready = asyncio.Event()
        serving = asyncio.create_task(serve_demo(HOST, find_free_port(HOST), ready=ready))
        await asyncio.wait_for(ready.wait(), 5)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving

    asyncio.run(embed())


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_cli_entry_point_stops_quietly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    demo = start_demo(tmp_path, "demo")
    try:
        demo.process.send_signal(stop_signal)
        demo.process.wait(timeout=10)
    finally:
        stop_process(demo.process)
    assert demo.process.returncode == 0
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def test_cli_entry_point_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "demo-service", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"eventmesh-bot demo-service: cannot listen on {HOST}:{port}: Address already in use "
        "(choose another --port)"
    ]


# --- faults that happen once: crash, another process on the port, lines in the log -------------


def post_to(app: Starlette, body: object) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            return await http.post("/admin/faults", json=body)

    return asyncio.run(post())


def test_the_log_fault_writes_the_runbooks_format(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "log" / "api.log")
    app = create_demo_app(log=log)
    answer = post_to(
        app,
        {
            "log": [
                {"level": "error", "type": "ConnectionRefused", "count": 2},
                {"level": "warn", "type": "SlowQuery", "message": "query took 2.3s"},
                {"level": "panic"},
            ]
        },
    )
    assert answer.status_code == 200 and answer.json()["log_lines_written"] == 4
    lines = log.path.read_text().splitlines()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (ERROR|WARN) riptide_api::\w+: \w+: .+"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[0].split()[2:5] == ["ERROR", "riptide_api::store:", "ConnectionRefused:"]
    assert lines[2].endswith("WARN riptide_api::store: SlowQuery: query took 2.3s")
    assert lines[3].split()[2:5] == ["ERROR", "riptide_api::main:", "panic:"]


def test_one_off_faults_are_checked_all_or_nothing(tmp_path: Path) -> None:
    app = create_demo_app()  # embedded, no log file: it can neither exit nor log
    answer = post_to(
        app, {"latency_ms": 50, "crash": True, "log": [{"level": "error", "count": 0}]}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "cannot exit" in error and "log[0].count" in error
    answer = post_to(app, {"hold_port": 0, "crash": "yes", "log": [{"level": "error"}]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (
        "hold_port must be a number of seconds" in error and "crash must be true or false" in error
    )
    assert "log needs a log file" in error

    async def faults() -> dict[str, object]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            return (await http.get("/admin/faults")).json()

    current = asyncio.run(faults())
    assert current["latency_ms"] == 0 and "crash" not in current  # nothing was applied


def test_crash_exits_like_a_panic_with_the_panic_in_its_log(tmp_path: Path) -> None:
    service = start_logged_service(tmp_path)
    try:
        answer = service.set_faults(crash=True)
        assert answer["exiting_with"] == 101
        assert service.wait_exited() == 101
    finally:
        service.stop()
    last = service.log_file.read_text().splitlines()[-1]
    assert "ERROR riptide_api::main: panic: thread 'main' panicked at 'injected crash" in last
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service.url}/healthz", timeout=2)


def test_hold_port_hands_the_port_to_another_named_process(tmp_path: Path) -> None:
    service = start_logged_service(tmp_path)
    try:
        holder = service.set_faults(hold_port=60)["holder_pid"]
        assert service.wait_exited() == 1
        wait_for_listener(service.port, holder)
        assert psutil.Process(holder).name() == "port-holder"
        # It takes connections and closes them: no answer to a health check.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{service.url}/healthz", timeout=2)
    finally:
        service.stop()
    assert not psutil.pid_exists(holder) or psutil.Process(holder).status() == "zombie"
    assert "ERROR riptide_api::server: AddrInUse: cannot bind" in service.log_file.read_text()
