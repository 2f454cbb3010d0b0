"""The CI gate: the run of the configured workflow for the commit deployed must be green (when
the commit is not known — `workdir` is not a git checkout — the latest run on the default
branch must be).

GitHub Actions REST API over httpx (the runbook's `gh run list --workflow=ci.yml --limit 5`):
`GET {api_url}/repos/{repository}/actions/workflows/{workflow}/runs?head_sha=…&per_page=5` for
a commit; else `GET {api_url}/repos/{repository}` for the default branch, then
`GET {api_url}/repos/{repository}/actions/workflows/{workflow}/runs?branch=…&per_page=5`.
The token comes from the environment variable `ci.token_env` names (or its _FILE), as read at
start-up (bot/settings.py SECRETS: it is no longer in os.environ then); it goes in a header and
nowhere else (never into a log line, an error, or a message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bot.config import CiSettings
from bot.settings import SECRETS

TIMEOUT_S = 10.0
DOWNLOAD_TIMEOUT_S = 300.0
MAX_ARTIFACT_BYTES = 4 << 30
RUNS_SHOWN = 5


class CiError(Exception):
    """GitHub could not be asked or refused; str() is one line naming what to fix."""


@dataclass(frozen=True)
class CiRun:
    id: int
    title: str
    branch: str
    sha: str
    status: str  # queued | in_progress | completed
    conclusion: str | None  # success | failure | cancelled | … once completed
    url: str
    created_at: datetime | None

    @property
    def passed(self) -> bool:
        return self.status == "completed" and self.conclusion == "success"

    @property
    def outcome(self) -> str:
        return self.conclusion if self.status == "completed" and self.conclusion else self.status


@dataclass(frozen=True)
class CiVerdict:
    passed: bool
    summary: str
    run: CiRun | None


class CiClient:
    def __init__(
        self,
        settings: CiSettings,
        http: httpx.AsyncClient,
        environ: Mapping[str, str] = SECRETS,
    ) -> None:
        self.settings = settings
        self.http = http
        self._token = environ.get(settings.token_env, "").strip() or None

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must be redacted from anything shown (the token, when set)."""
        return (self._token,) if self._token else ()

    def runs_url(self, branch: str) -> str:
        return (
            f"{self.repo_url}/actions/workflows/{quote(self.settings.workflow, safe='')}/runs"
            f"?branch={quote(branch, safe='')}&per_page={RUNS_SHOWN}"
        )

    def commit_runs_url(self, commit: str) -> str:
        return (
            f"{self.repo_url}/actions/workflows/{quote(self.settings.workflow, safe='')}/runs"
            f"?head_sha={quote(commit, safe='')}&per_page={RUNS_SHOWN}"
        )

    @property
    def repo_url(self) -> str:
        return f"{self.settings.api_url}/repos/{self.settings.repository}"

    async def _get(self, url: str) -> Any:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = await self.http.get(url, headers=headers, timeout=TIMEOUT_S)
        except httpx.TimeoutException:
            raise CiError(f"GitHub did not answer within {TIMEOUT_S:.0f}s") from None
        except httpx.HTTPError as exc:
            where = self.settings.api_url
            raise CiError(f"cannot reach GitHub at {where}: {_cause(exc)}") from None
        if response.status_code in (401, 403):
            raise CiError(
                f"GitHub refused the request (HTTP {response.status_code}): check the token in "
                f"${self.settings.token_env}"
            )
        if response.status_code == 404:
            hint = "" if self._token else f" (private? set ${self.settings.token_env})"
            raise CiError(
                f"GitHub has no workflow {self.settings.workflow} in "
                f"{self.settings.repository}{hint}"
            )
        if response.status_code != 200:
            raise CiError(f"GitHub answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise CiError("GitHub answered something that is not JSON") from None

    async def default_branch(self) -> str:
        repo = await self._get(self.repo_url)
        branch = repo.get("default_branch") if isinstance(repo, dict) else None
        if not isinstance(branch, str) or not branch:
            repository = self.settings.repository
            raise CiError(f"GitHub did not say which branch of {repository} is the default")
        return branch

    async def recent_runs(self) -> tuple[str, list[CiRun]]:
        """The default branch and its last runs of the workflow, newest first."""
        branch = await self.default_branch()
        body = await self._get(self.runs_url(branch))
        raw_runs = body.get("workflow_runs") if isinstance(body, dict) else None
        if not isinstance(raw_runs, list):
            raise CiError("GitHub's answer has no workflow_runs")
        return branch, [_run(r) for r in raw_runs[:RUNS_SHOWN] if isinstance(r, dict)]

    async def commit_runs(self, commit: str) -> list[CiRun]:
        """The workflow's runs for one commit, newest first."""
        body = await self._get(self.commit_runs_url(commit))
        raw_runs = body.get("workflow_runs") if isinstance(body, dict) else None
        if not isinstance(raw_runs, list):
            raise CiError("GitHub's answer has no workflow_runs")
        runs = [_run(r) for r in raw_runs[:RUNS_SHOWN] if isinstance(r, dict)]
        return [r for r in runs if r.sha == commit]

    async def gate(self, commit: str | None = None) -> CiVerdict:
        """Green only when the newest run for the commit (without one: on the default branch)
        completed successfully."""
        if commit is not None:
            return await self._commit_gate(commit)
        branch, runs = await self.recent_runs()
        workflow = self.settings.workflow
        if not runs:
            return CiVerdict(False, f"{workflow} has no runs on {branch}", None)
        latest = runs[0]
        sha = latest.sha[:7]
        if latest.passed:
            return CiVerdict(True, f"{workflow} passed on {branch} ({sha})", latest)
        if latest.status != "completed":
            return CiVerdict(
                False,
                f"the latest {workflow} run on {branch} ({sha}) is still {latest.status}",
                latest,
            )
        return CiVerdict(
            False, f"the latest {workflow} run on {branch} ({sha}) ended: {latest.outcome}", latest
        )

    async def _commit_gate(self, commit: str) -> CiVerdict:
        workflow, sha = self.settings.workflow, commit[:7]
        runs = await self.commit_runs(commit)
        if not runs:
            return CiVerdict(False, f"{workflow} has no run for commit {sha}", None)
        latest = runs[0]
        if latest.passed:
            return CiVerdict(True, f"{workflow} passed for commit {sha} (run {latest.id})", latest)
        if latest.status != "completed":
            return CiVerdict(False, f"{workflow} for commit {sha} is still {latest.status}", latest)
        return CiVerdict(False, f"{workflow} for commit {sha} ended: {latest.outcome}", latest)

    async def artifact_url(self, run: CiRun, name: str) -> str:
        """Where the run's artifact `name` is downloaded from (it must not have expired)."""
        body = await self._get(f"{self.repo_url}/actions/runs/{run.id}/artifacts?per_page=100")
        listed = body.get("artifacts") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            raise CiError("GitHub's answer has no artifacts")
        names = [str(a.get("name")) for a in listed if isinstance(a, dict)]
        for artifact in listed:
            if not isinstance(artifact, dict) or artifact.get("name") != name:
                continue
            if artifact.get("expired"):
                raise CiError(
                    f"the artifact {name} of CI run {run.id} has expired (CI keeps artifacts "
                    "30 days): run the workflow again"
                )
            url = artifact.get("archive_download_url")
            if isinstance(url, str) and url:
                return url
        raise CiError(
            f"CI run {run.id} has no artifact named {name} (it has: {', '.join(names) or 'none'})"
            ": check deploy.ci_artifact and the workflow's upload-artifact step"
        )

    async def download(self, url: str, target: Path) -> int:
        """The artifact's zip into target; its size. GitHub answers with a redirect to a
        short-lived storage URL: followed once, without the token (it is for GitHub only)."""
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            first = await self.http.get(url, headers=headers, timeout=TIMEOUT_S)
            if first.status_code in (301, 302, 303, 307, 308):
                location = first.headers.get("location", "")
                if not location:
                    raise CiError("GitHub redirected the artifact download to nowhere")
                return await self._save(location, target)
        except httpx.TimeoutException:
            raise CiError(f"GitHub did not answer within {TIMEOUT_S:.0f}s") from None
        except httpx.HTTPError as exc:
            raise CiError(f"cannot download the artifact: {_cause(exc)}") from None
        if first.status_code in (401, 403):
            raise CiError(
                f"GitHub refused the artifact download (HTTP {first.status_code}): the token in "
                f"${self.settings.token_env} needs actions:read"
            )
        if first.status_code != 200:
            raise CiError(f"GitHub answered HTTP {first.status_code} to the artifact download")
        target.write_bytes(first.content)
        return len(first.content)

    async def _save(self, url: str, target: Path) -> int:
        size = 0
        async with self.http.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise CiError(f"the artifact's storage answered HTTP {response.status_code}")
            with target.open("wb") as file:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ARTIFACT_BYTES:
                        raise CiError(f"the artifact is larger than {MAX_ARTIFACT_BYTES >> 30} GiB")
                    file.write(chunk)
        return size


def _run(raw: dict[str, Any]) -> CiRun:
    created = raw.get("created_at")
    try:
        created_at = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        created_at = None
    return CiRun(
        id=int(raw.get("id") or 0),
        title=str(raw.get("display_title") or raw.get("name") or ""),
        branch=str(raw.get("head_branch") or ""),
        sha=str(raw.get("head_sha") or ""),
        status=str(raw.get("status") or "unknown"),
        conclusion=raw.get("conclusion") if isinstance(raw.get("conclusion"), str) else None,
        url=str(raw.get("html_url") or ""),
        created_at=created_at,
    )


def _cause(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return type(exc).__name__
