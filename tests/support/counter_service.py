"""A service that counts its requests the way another framework does, on a loopback port.

The demo EventMesh service counts in `eventmesh_http_requests_total`; real services use their
framework's counter. This one answers /healthz and /api/v1/status like EventMesh and serves
/metrics in one of two real formats: a Prometheus client library's `http_requests_total{code,
handler, method}`, or Spring Boot's Micrometer `http_server_requests_seconds` summary (its
`_count` and `_sum`, URI templates, the trailing comma of its label sets). Every request it
answers is counted, and each scrape first counts `traffic` simulated client requests to
/api/v1/orders/{id}, failing at `error_rate` (the n-th fails when n * rate crosses an integer:
deterministic), so every scrape after the first has enough traffic for a rate.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

Style = Literal["http_requests_total", "micrometer"]
ORDERS = "/api/v1/orders/{id}"


class CounterService:
    def __init__(self, style: Style, *, traffic: int = 100, error_rate: float = 0.0) -> None:
        self.style = style
        self.traffic = traffic
        self.error_rate = error_rate
        self._counts: dict[tuple[str, str], int] = {}
        self._simulated = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set_error_rate(self, rate: float) -> None:
        with self._lock:
            self.error_rate = rate

    def __enter__(self) -> CounterService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = service._answer(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, path: str) -> tuple[int, str, str]:
        with self._lock:
            if path == "/healthz":
                answer = (200, "application/json", json.dumps({"status": "healthy"}))
            elif path == "/api/v1/status":
                components = {"api": {"status": "up", "critical": True}}
                answer = (200, "application/json", json.dumps({"components": components}))
            elif path == "/metrics":
                self._simulate_traffic()
                answer = (200, "text/plain; version=0.0.4; charset=utf-8", self._exposition())
            else:
                answer = (404, "text/plain", "not found")
            # Counted as the service's framework counts: once answered, this scrape excluded.
            key = (path, str(answer[0]))
            self._counts[key] = self._counts.get(key, 0) + 1
            return answer

    def _simulate_traffic(self) -> None:
        for _ in range(self.traffic):
            self._simulated += 1
            n = self._simulated
            failed = int(n * self.error_rate) > int((n - 1) * self.error_rate)
            key = (ORDERS, "500" if failed else "200")
            self._counts[key] = self._counts.get(key, 0) + 1

    def _exposition(self) -> str:
        if self.style == "http_requests_total":
            lines = [
                "# HELP http_requests_total Total number of HTTP requests.",
                "# TYPE http_requests_total counter",
            ]
            lines += [
                f'http_requests_total{{code="{code}",handler="{path}",method="get"}} {n}'
                for (path, code), n in sorted(self._counts.items())
            ]
        else:
            lines = [
                "# HELP http_server_requests_seconds  ",
                "# TYPE http_server_requests_seconds summary",
            ]
            for (path, code), n in sorted(self._counts.items()):
                outcome = "SERVER_ERROR" if code.startswith("5") else "SUCCESS"
                labels = (
                    f'exception="None",method="GET",outcome="{outcome}",status="{code}",'
                    f'uri="{path}",'
                )
                lines.append(f"http_server_requests_seconds_count{{{labels}}} {float(n)}")
                lines.append(f"http_server_requests_seconds_sum{{{labels}}} {n * 0.004:.3f}")
        lines.append('process_uptime_seconds{application="orders",} 123.0')
        return "\n".join(lines) + "\n"
