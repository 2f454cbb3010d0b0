"""The embedded uvicorn server: a Date header made per response, and a stop when told."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bot.webserver import DatedServerState, bind, bound_port, embedded_server


def _app() -> Starlette:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def _loaded_config(**options: object) -> uvicorn.Config:
    config = uvicorn.Config(_app(), log_config=None, **options)  # type: ignore[arg-type]
    config.load()
    return config


def test_the_date_header_is_the_time_a_response_asks_for_it() -> None:
    now = [1_800_000_000.2]
    state = DatedServerState(_loaded_config(), now=lambda: now[0])

    first = dict(state.default_headers)
    now[0] += 0.5  # the same second: the same headers
    assert dict(state.default_headers) == first
    now[0] += 61.0
    later = dict(state.default_headers)

    assert first[b"date"] == formatdate(1_800_000_000, usegmt=True).encode()
    assert later[b"date"] == formatdate(1_800_000_061, usegmt=True).encode()
    assert later[b"server"] == b"uvicorn"  # uvicorn's own default headers are kept


def test_no_date_header_when_the_config_says_so() -> None:
    state = DatedServerState(_loaded_config(date_header=False), now=lambda: 1_800_000_000.0)

    assert b"date" not in dict(state.default_headers)


def test_a_served_response_is_dated_and_a_stop_ends_the_server_at_once() -> None:
    async def scenario() -> tuple[str, int, bool]:
        sock = bind("127.0.0.1", 0)
        ready = asyncio.Event()
        server = embedded_server(_app(), ready=ready)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await asyncio.wait_for(ready.wait(), 10)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{bound_port(sock)}/")
        server.should_exit = True  # what the bot's shutdown does (bot/runtime.py)
        await asyncio.wait_for(serving, 10)
        return response.headers.get("date", ""), response.status_code, serving.done()

    date, status, stopped = asyncio.run(scenario())

    assert status == 200
    assert date.endswith(" GMT")
    assert stopped
