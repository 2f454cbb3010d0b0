"""A fake of the two GitHub REST endpoints the CI gate reads, on a loopback port.

`GET /repos/{owner}/{repo}` answers the default branch; `GET /repos/{owner}/{repo}/actions/
workflows/{workflow}/runs?branch=…&per_page=…` (or `?head_sha=…`: one commit's) answers the
runs set with `set_runs`, newest first, as GitHub does. The artifacts API: a run's artifacts
(`add_artifact`), and an artifact's zip answered as GitHub does — a 302 to a storage URL
(`/blob/<id>`, here on the fake too), which wants no token. A token, when the fake is given one,
must arrive as `Authorization: Bearer <token>`; a wrong one gets 401 like GitHub's "Bad
credentials". Every request is recorded (path, query, headers) for tests to assert on.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Redirect:
    location: str


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def run(
    run_id: int,
    conclusion: str | None = "success",
    *,
    status: str = "completed",
    branch: str = "main",
    sha: str = "0123456789abcdef",
    title: str = "CI",
) -> dict[str, Any]:
    return {
        "id": run_id,
        "name": "CI",
        "display_title": title,
        "head_branch": branch,
        "head_sha": sha,
        "status": status,
        "conclusion": conclusion,
        "html_url": f"https://github.example/eventmesh/eventmesh/actions/runs/{run_id}",
        "created_at": "2026-11-27T10:00:00Z",
        "event": "push",
    }


class GitHubFake:
    def __init__(
        self,
        repository: str = "eventmesh/eventmesh",
        workflow: str = "ci.yml",
        token: str | None = None,
        default_branch: str = "main",
    ) -> None:
        self.repository = repository
        self.workflow = workflow
        self.token = token
        self.default_branch = default_branch
        self.runs: list[dict[str, Any]] = [run(1)]
        self.requests: list[Request] = []
        self.artifacts: dict[int, list[dict[str, Any]]] = {}
        self.blobs: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def set_runs(self, *runs: dict[str, Any]) -> None:
        with self._lock:
            self.runs = list(runs)

    def add_artifact(self, run_id: int, name: str, content: bytes, *, expired: bool = False) -> int:
        """An artifact of a run (content: the zip's bytes); its id."""
        with self._lock:
            artifact_id = 1000 + len(self.blobs)
            self.blobs[artifact_id] = content
            self.artifacts.setdefault(run_id, []).append(
                {
                    "id": artifact_id,
                    "name": name,
                    "size_in_bytes": len(content),
                    "expired": expired,
                    "archive_download_url": (
                        f"{self.url}/repos/{self.repository}/actions/artifacts/{artifact_id}/zip"
                    ),
                }
            )
        return artifact_id

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GitHubFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = fake._answer(self.path, dict(self.headers.items()))
                if isinstance(body, Redirect):
                    self.send_response(302)
                    self.send_header("Location", body.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                binary = isinstance(body, bytes)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                kind = "application/zip" if binary else "application/json"
                self.send_header("Content-Type", kind)
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

    def _answer(self, raw_path: str, headers: dict[str, str]) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        lowered = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.requests.append(Request(parts.path, parse_qs(parts.query), lowered))
            if parts.path.startswith("/blob/"):  # the storage a download is sent to
                blob = self.blobs.get(int(parts.path.rsplit("/", 1)[1]))
                return (200, blob) if blob is not None else (404, {"message": "Not Found"})
            if self.token is not None and lowered.get("authorization") != f"Bearer {self.token}":
                return 401, {"message": "Bad credentials"}
            repo = f"/repos/{self.repository}"
            if parts.path == repo:
                return 200, {"full_name": self.repository, "default_branch": self.default_branch}
            if parts.path == f"{repo}/actions/workflows/{self.workflow}/runs":
                query = parse_qs(parts.query)
                per_page = int(query.get("per_page", ["30"])[0])
                if "head_sha" in query:  # one commit's runs, whatever the branch
                    sha = query["head_sha"][0]
                    runs = [r for r in self.runs if r["head_sha"] == sha][:per_page]
                else:
                    branch = query.get("branch", [""])[0]
                    runs = [r for r in self.runs if r["head_branch"] == branch][:per_page]
                return 200, {"total_count": len(runs), "workflow_runs": runs}
            run_artifacts = re.fullmatch(rf"{repo}/actions/runs/(\d+)/artifacts", parts.path)
            if run_artifacts:
                listed = self.artifacts.get(int(run_artifacts.group(1)), [])
                return 200, {"total_count": len(listed), "artifacts": listed}
            download = re.fullmatch(rf"{repo}/actions/artifacts/(\d+)/zip", parts.path)
            if download and int(download.group(1)) in self.blobs:
                return 302, Redirect(f"{self.url}/blob/{download.group(1)}?sig=short-lived")
            return 404, {"message": "Not Found"}
