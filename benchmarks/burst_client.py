"""The sender of an ack burst: every request at once over plain sockets, each timed from its
connect to the end of its response.

What a burst costs the sender is not the server's latency, and Slack's senders are not one
Python process. With httpx (an AsyncClient, one connection per request) the sender's own work
was most of what was measured: a Starlette app that answers at once read p50 43 ms, p99
65-80 ms for 50 requests, on a machine doing nothing else. Here the requests are encoded
before the clock starts and each costs the sender a few syscalls; h11 parses the answers.

`python -m benchmarks.burst_client URL`: the prepared requests (JSON: body, headers, channel)
on stdin, the samples (JSON: seconds, status, channel) on stdout.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

TIMEOUT_S = 15.0  # the ack_latency run waits twice that for the whole burst


@dataclass(frozen=True)
class Sample:
    seconds: float
    status: int  # 0: no HTTP response at all (connection error or timeout)
    channel: str


@dataclass
class _Request:
    channel: str
    parser: h11.Connection
    out: bytes
    sock: socket.socket | None = None
    started: float = 0.0
    status: int = 0


def encode(
    parser: h11.Connection, host: str, port: int, path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    """The request's bytes, as one HTTP/1.1 POST on a connection of its own; `parser` (which
    must have sent the request to parse its answer) is the connection's."""
    skip = {"host", "content-length", "connection"}
    fields = [
        ("Host", f"{host}:{port}"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *((name, value) for name, value in headers.items() if name.lower() not in skip),
    ]
    return b"".join(
        [
            parser.send(h11.Request(method="POST", target=path, headers=fields)) or b"",
            parser.send(h11.Data(data=body)) or b"",
            parser.send(h11.EndOfMessage()) or b"",
        ]
    )


def send_all(
    url: str, prepared: Sequence[dict[str, Any]], timeout_s: float = TIMEOUT_S
) -> list[Sample]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    requests = []
    for p in prepared:
        parser = h11.Connection(h11.CLIENT)
        out = encode(parser, host, port, path, p["body"].encode(), p["headers"])
        requests.append(_Request(p["channel"], parser, out))
    samples: dict[int, Sample] = {}
    selector = selectors.DefaultSelector()
    for i, request in enumerate(requests):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.sock = sock
        request.started = time.perf_counter()
        sock.connect_ex((host, port))
        selector.register(sock, selectors.EVENT_WRITE, i)
    deadline = time.monotonic() + timeout_s
    while len(samples) < len(requests) and time.monotonic() < deadline:
        for key, _events in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            i = key.data
            request = requests[i]
            sock = request.sock
            assert sock is not None
            try:
                if request.out:
                    sent = sock.send(request.out)
                    request.out = request.out[sent:]
                    if not request.out:
                        selector.modify(sock, selectors.EVENT_READ, i)
                    continue
                data = sock.recv(65536)
            except OSError:
                data = b""  # refused or reset: counted as no answer unless one came
            request.parser.receive_data(data)
            done = not data
            while True:
                event = request.parser.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    request.status = event.status_code
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    done = True
                    break
            if done:
                samples[i] = Sample(
                    time.perf_counter() - request.started, request.status, request.channel
                )
                selector.unregister(sock)
                sock.close()
    for i, request in enumerate(requests):
        if i not in samples:
            samples[i] = Sample(time.perf_counter() - request.started, 0, request.channel)
            if request.sock is not None:
                request.sock.close()
    return [samples[i] for i in range(len(requests))]


def main(argv: Sequence[str] | None = None) -> int:
    (url,) = sys.argv[1:] if argv is None else argv
    samples = send_all(url, json.load(sys.stdin))
    json.dump([asdict(sample) for sample in samples], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
