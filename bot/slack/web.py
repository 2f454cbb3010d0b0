"""The bot's HTTP surface: GET /healthz and GET /metrics always; POST /slack/events in HTTP mode."""

from __future__ import annotations

import time

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import __version__
from bot.slack.bolt_app import RECEIVED_AT
from bot.telemetry import Telemetry


def create_web_app(telemetry: Telemetry, mode: str, bolt_app: AsyncApp | None = None) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy", "version": __version__, "mode": mode})

    async def metrics(_: Request) -> Response:
        return Response(telemetry.exposition(), media_type=telemetry.content_type)

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics)]
    if bolt_app is not None:
        handler = AsyncSlackRequestHandler(bolt_app)

        async def slack_events(request: Request) -> Response:
            return await handler.handle(request, {RECEIVED_AT: time.perf_counter()})

        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    return Starlette(routes=routes)
