"""The probe thread: its own loop, the service's latency only, bounded bodies, batched results."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.config import Environment, Thresholds
from bot.loop_thread import LoopThread
from bot.runbook.health.health import Health, HealthChecker
from bot.runbook.health.probe import MAX_BODY_BYTES, Prober
from bot.store import Store
from bot.telemetry import Telemetry
from tests.conftest import DemoService


@pytest.fixture
def prober() -> Iterator[Prober]:
    with Prober() as running:
        yield running


def test_waiting_for_a_connection_slot_is_neither_latency_nor_timeout(demo: DemoService) -> None:
    demo.set_faults(latency_ms=200)
    url = f"{demo.url}/healthz"

    async def three_at_once(prober: Prober) -> list[float | None]:
        probes = await asyncio.gather(*(prober.get(url, timeout_s=0.35) for _ in range(3)))
        assert all(p.answered for p in probes), probes
        return [p.latency_ms for p in probes]

    # One slot: the three go one after the other, ~600 ms in all, each timed at ~200 ms and
    # none timed out at 350 ms.
    with Prober(max_connections=1) as prober:
        latencies = prober.submit(three_at_once(prober)).result()
    assert all(ms is not None and 199 <= ms < 300 for ms in latencies), latencies
    requests = demo.requests()
    assert max(r["started"] for r in requests) >= min(r["finished"] for r in requests)


class _Odd(BaseHTTPRequestHandler):
    """/huge: a body past the probe's limit; /plain: text/plain with no charset."""

    def do_GET(self) -> None:
        body = b"x" * (MAX_BODY_BYTES + 10) if self.path == "/huge" else "up 1 \u2713".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_body_past_the_limit_is_not_read_to_the_end(prober: Prober, odd_server: str) -> None:
    probe = prober.submit(prober.get(f"{odd_server}/huge", timeout_s=2)).result()
    assert probe.error == "answered with more than 1,048,576 bytes"


def test_a_body_without_a_charset_is_read_as_utf8(prober: Prober, odd_server: str) -> None:
    probe = prober.submit(prober.get(f"{odd_server}/plain", timeout_s=2)).result()
    assert (probe.status_code, probe.body) == (200, "up 1 \u2713")


def test_a_loop_thread_runs_work_on_its_own_thread_and_cancels_it() -> None:
    loop_thread = LoopThread("test-loop")
    loop_thread.start()
    started = threading.Event()

    async def where() -> str:
        return threading.current_thread().name

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    try:
        assert loop_thread.submit(where()).result(timeout=5) == "test-loop"
        hanging = loop_thread.submit(forever())
        assert started.wait(5)
        hanging.cancel()
        assert asyncio.run(loop_thread.run(where())) == "test-loop"
    finally:
        loop_thread.stop()
    assert hanging.cancelled()
    assert not any(t.name == "test-loop" for t in threading.enumerate())


def test_results_come_in_batches_and_all_of_them_are_recorded(
    tmp_path: Path, demo: DemoService, prober: Prober
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    envs = [
        Environment(name=f"env{i:02d}", base_url=demo.url, transport="local") for i in range(30)
    ]
    checker = HealthChecker(prober, Thresholds(), store, Telemetry())

    async def scenario() -> tuple[list[list[str]], list[str], list[int]]:
        batches = [[r.environment for r in batch] async for batch in checker.check_many(envs)]
        again = await checker.check_all(envs)
        return batches, [r.environment for r in again], [r.streak for r in again]

    try:
        batches, names, streaks = asyncio.run(scenario())
        assert sorted(n for batch in batches for n in batch) == [e.name for e in envs]
        assert all(batches)
        assert sorted(names) == [e.name for e in envs]
        assert streaks == [2] * 30  # second Healthy check in a row for each
        assert store.health_check_count() == 60
        assert all(store.consecutive_results(e.name, Health.HEALTHY.value) == 2 for e in envs)
    finally:
        store.close()
