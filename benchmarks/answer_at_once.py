"""A server that answers every POST at once: the floor the burst client itself sets.

`python -m uvicorn benchmarks.answer_at_once:app --port N`; ack_latency sends it the same
bursts as the bots, in the same rounds, so what the sender and the machine cost is seen
beside the bots' figures."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def answer(request: Request) -> Response:
    await request.body()
    return Response(b"")


async def healthz(_: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/{path:path}", answer, methods=["POST"]),
    ]
)
