"""The bot's HTTP surface: GET /healthz (liveness), /readyz (readiness, bot/slack/readiness.py)
and /metrics always; POST /slack/events in HTTP mode.

A request to /slack/events is read only up to MAX_BODY_BYTES before Bolt checks its signature:
anyone can send one, and a body is held in memory whole to be checked. A declared length over
the limit is answered 413 at once, unread; a body that grows past it while read (chunked), as
soon as it does.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import __version__
from bot.acks_first import ACKS_FIRST
from bot.slack.bolt_app import RECEIVED_AT
from bot.slack.readiness import Readiness
from bot.telemetry import Telemetry

# Slack sends slash commands of a few KB, but a button press carries the whole message it sits
# on (up to 50 blocks of 3,000 characters, form-encoded: a few hundred KB at the very most).
MAX_BODY_BYTES = 512 * 1024

_EXPOSITION = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request's body, or None as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_web_app(
    telemetry: Telemetry, mode: str, readiness: Readiness, bolt_app: AsyncApp | None = None
) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy", "version": __version__, "mode": mode})

    async def readyz(_: Request) -> JSONResponse:
        state = await readiness.check()
        body = {"status": "ready" if state.ready else "unready", "version": __version__}
        if not state.ready:
            body["problems"] = list(state.problems)
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics(_: Request) -> Response:
        await readiness.check()
        # Off the loop (with a few hundred environments' series it takes ~20 ms of CPU), on a
        # thread of its own: the default executor can be full of store calls waiting for a
        # store that is away, and a scrape must still answer then.
        loop = asyncio.get_running_loop()
        exposition = await loop.run_in_executor(_EXPOSITION, telemetry.exposition)
        return Response(exposition, media_type=telemetry.content_type)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics),
    ]
    if bolt_app is not None:
        handler = AsyncSlackRequestHandler(bolt_app)

        async def slack_events(request: Request) -> Response:
            received_at = time.perf_counter()
            # From here, not only from the dispatcher: Bolt's own checks come before it.
            acked = ACKS_FIRST.arrived()
            try:
                body = await read_limited(request)
                if body is None:
                    return Response("request body too large", status_code=413)
                # What Request.body() caches: Bolt's adapter reads the body from here.
                request._body = body
                return await handler.handle(request, {RECEIVED_AT: received_at})
            finally:
                acked()

        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    return Starlette(routes=routes)
