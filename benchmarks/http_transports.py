"""Which HTTP client for the health fan-out: httpx, httpx on aiohttp, or aiohttp, in one run.

600 concurrent GETs (200 environments × healthz, status, metrics) against a few demo EventMesh
services (healthz in --healthz-ms, the rest in --other-ms), from one event loop, as the probe
thread makes them. Each client runs a cold round (new connections) and a warm one (reused),
in interleaved passes. Reported per round: the wall time, and the healthz latency as a caller
timing `get()` sees it (so a wait for a pool slot shows), and the HTTP statuses or errors.

    .venv/bin/python -m benchmarks.http_transports --passes 2

httpx on aiohttp needs the `httpx-aiohttp` package (`pip install httpx-aiohttp`); without
it, that contender is left out and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import aiohttp
import httpx

from tests.conftest import stop_process
from tests.support.fleet import start_services

Get = Callable[[str], Awaitable[int]]


async def fan_out(get: Get, urls: Sequence[str]) -> tuple[float, list[float], dict[str, int]]:
    async def one(url: str) -> tuple[str, float, str]:
        started = time.perf_counter()
        try:
            outcome = str(await get(url))
        except Exception as exc:
            outcome = type(exc).__name__
        return url, (time.perf_counter() - started) * 1000, outcome

    started = time.perf_counter()
    results = await asyncio.gather(*(one(u) for u in urls))
    wall = time.perf_counter() - started
    healthz = sorted(ms for url, ms, _ in results if url.endswith("/healthz"))
    outcomes: dict[str, int] = {}
    for _, _, outcome in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return wall, healthz, outcomes


def httpx_client(limits: httpx.Limits) -> Callable[[], contextlib.AbstractAsyncContextManager[Get]]:
    @contextlib.asynccontextmanager
    async def open_client():  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def get(url: str) -> int:
                return (await client.get(url)).status_code

            yield get

    return open_client


def httpx_on_aiohttp(limit: int) -> Callable[[], contextlib.AbstractAsyncContextManager[Get]]:
    from httpx_aiohttp import AiohttpTransport

    @contextlib.asynccontextmanager
    async def open_client():  # type: ignore[no-untyped-def]
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        transport = AiohttpTransport(client=session)
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:

            async def get(url: str) -> int:
                return (await client.get(url)).status_code

            yield get

    return open_client


def plain_aiohttp(limit: int) -> Callable[[], contextlib.AbstractAsyncContextManager[Get]]:
    @contextlib.asynccontextmanager
    async def open_client():  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=limit)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def get(url: str) -> int:
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            yield get

    return open_client


def contenders() -> tuple[
    dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Get]]], str
]:
    found = {
        "httpx, default limits (100)": httpx_client(httpx.Limits(max_connections=100)),
        "httpx, no limits": httpx_client(
            httpx.Limits(max_connections=None, max_keepalive_connections=None)
        ),
    }
    note = ""
    try:
        found["httpx on aiohttp (httpx-aiohttp), 100"] = httpx_on_aiohttp(100)
        found["httpx on aiohttp (httpx-aiohttp), no limit"] = httpx_on_aiohttp(0)
    except ImportError:
        note = "httpx-aiohttp is not installed: that contender is left out"
    found["aiohttp, default limit (100)"] = plain_aiohttp(100)
    found["aiohttp, no limit"] = plain_aiohttp(0)
    return found, note


async def measure(
    urls: Sequence[str], passes: int
) -> tuple[list[tuple[str, str, float, list[float], dict[str, int]]], str]:
    rows = []
    clients, note = contenders()
    for number in range(passes):
        for name, open_client in clients.items():
            async with open_client() as get:
                for rnd in ("cold", "warm"):
                    wall, healthz, outcomes = await fan_out(get, urls)
                    rows.append((name, rnd, wall, healthz, outcomes))
                    print(f"pass {number + 1} {name} {rnd}: {wall:.2f} s", file=sys.stderr)
            await asyncio.sleep(1)  # let the services close what the client left
    return rows, note


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="http-transports-"))
    load_before = os.getloadavg()[0]
    services = start_services(tmp, args.services, args.healthz_ms, args.other_ms)
    try:
        urls = [
            services[i % len(services)].url + path
            for i in range(args.environments)
            for path in ("/healthz", "/api/v1/status", "/metrics")
        ]
        rows, note = asyncio.run(measure(urls, args.passes))
    finally:
        for service in services:
            stop_process(service.process)
    try:
        adapter = version("httpx-aiohttp")
    except PackageNotFoundError:
        adapter = "not installed"
    print(
        f"{len(urls)} concurrent GETs ({args.environments} environments × 3) on "
        f"{args.services} demo services (healthz {args.healthz_ms} ms, others {args.other_ms} ms)"
    )
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, httpx {version('httpx')}, "
        f"httpcore {version('httpcore')}, aiohttp {version('aiohttp')}, httpx-aiohttp {adapter}; "
        f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    if note:
        print(note)
    print()
    print("| client | connections | wall | healthz as the caller timed it: p50 / max | outcomes |")
    print("| --- | --- | ---: | ---: | --- |")
    for name, rnd, wall, healthz, outcomes in rows:
        print(
            f"| {name} | {rnd} | {wall:.2f} s | {statistics.median(healthz):,.0f} / "
            f"{max(healthz):,.0f} ms | "
            + ", ".join(f"{n}× {o}" for o, n in sorted(outcomes.items()))
            + " |"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_transports")
    parser.add_argument("--environments", type=int, default=200)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--healthz-ms", type=int, default=200)
    parser.add_argument("--other-ms", type=int, default=50)
    parser.add_argument("--passes", type=int, default=2)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
