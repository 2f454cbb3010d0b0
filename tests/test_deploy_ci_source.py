"""`deploy.source: ci`: the package is the CI run's artifact for the commit (the GitHub
Actions artifacts API, against the GitHub fake), so nothing is built on the bot's machine."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import CiSettings, Config
from bot.demo.release import build
from bot.runbook.changes.ci import CiClient
from bot.runbook.changes.packaging import build_package
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_env import run_deploy as deploy
from tests.support.github_fake import GitHubFake, run

TOKEN = "ghp_" + "ArtifactTokenNeverForStorage" * 2


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoTarget]:
    made = demo_target(tmp_path, "dev")
    yield made
    made.stop()


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    with GitHubFake() as fake:
        yield fake


def git_checkout(workdir: Path) -> str:
    """workdir as a git checkout with one commit; the commit's sha."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    (workdir / "README").write_text("the service's source\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    return git("rev-parse", "HEAD")


def ci_package(tmp: Path, version: str) -> tuple[bytes, str]:
    """An artifact zip as a CI workflow uploads it, and the sha256 of the package inside."""
    package = build_package(version, [build(tmp / "build", version)], tmp / "out")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(package.path, f"dist/{package.path.name}")
    return buffer.getvalue(), package.sha256


def config_for(target: DemoTarget, github: GitHubFake, **overrides: Any) -> Config:
    env = target.environment(source="ci", build="false", test="false", **overrides)
    return Config.model_validate(
        {
            "ci": {
                "provider": "github",
                "repository": github.repository,
                "workflow": github.workflow,
                "api_url": github.url,
            },
            "environments": {target.name: env},
        }
    )


def test_the_commits_ci_artifact_is_deployed_and_nothing_is_built(
    target: DemoTarget, github: GitHubFake, tmp_path: Path
) -> None:
    commit = git_checkout(target.workdir)
    github.set_runs(run(21, "success", sha=commit), run(20, "failure", sha="0" * 40))
    content, sha256 = ci_package(tmp_path, "5.0.0")
    github.add_artifact(21, "coverage", b"not this one")
    github.add_artifact(21, "eventmesh-package", content)

    events, outcome = deploy(config_for(target, github), "dev", None)
    assert outcome.state == "succeeded", outcome.summary
    shown = " ".join(str(e) for e in events)
    assert "built by CI (run 21): nothing built here" in shown  # build "false" never ran
    assert "tested by CI: run 21 passed" in shown
    assert f"from CI run 21's artifact eventmesh-package, sha256 {sha256[:12]}" in shown
    assert httpx.get(f"{target.url}/healthz", timeout=5).json()["version"] == "5.0.0"
    package = target.install_dir / "packages" / "eventmesh-5.0.0.tar.gz"
    assert hashlib.sha256(package.read_bytes()).hexdigest() == sha256
    asked = [r.path for r in github.requests]
    assert f"/repos/{github.repository}/actions/runs/21/artifacts" in asked
    assert any(p.startswith("/blob/") for p in asked)  # the redirect was followed
    runs = [r for r in github.requests if r.path.endswith("/runs")]
    assert runs and all(r.query.get("head_sha") == [commit] for r in runs)


def test_a_red_run_for_the_commit_deploys_nothing(
    target: DemoTarget, github: GitHubFake, tmp_path: Path
) -> None:
    commit = git_checkout(target.workdir)
    github.set_runs(run(31, "failure", sha=commit))
    github.add_artifact(31, "eventmesh-package", ci_package(tmp_path, "5.0.1")[0])
    _, outcome = deploy(config_for(target, github), "dev", None)
    assert outcome.state == "failed"
    # The checklist (the CI gate of that commit) stops it before anything is downloaded.
    assert f"CI is not green: ci.yml for commit {commit[:7]} ended: failure" in outcome.summary
    assert not [r for r in github.requests if r.path.endswith("/artifacts")]
    assert not target.install_dir.exists()


def test_a_missing_or_mismatched_artifact_says_what_to_fix(
    target: DemoTarget, github: GitHubFake, tmp_path: Path
) -> None:
    commit = git_checkout(target.workdir)
    github.set_runs(run(41, "success", sha=commit))
    github.add_artifact(41, "logs", b"zip")
    _, outcome = deploy(config_for(target, github), "dev", None)
    assert "CI run 41 has no artifact named eventmesh-package (it has: logs)" in outcome.summary
    github.add_artifact(41, "eventmesh-package", ci_package(tmp_path, "5.0.2")[0])
    _, outcome = deploy(config_for(target, github), "dev", "5.0.3")
    assert "CI built eventmesh-5.0.2.tar.gz, not eventmesh-5.0.3.tar.gz" in outcome.summary
    assert not target.install_dir.exists()


def test_the_download_follows_githubs_redirect_without_the_token(tmp_path: Path) -> None:
    with GitHubFake(token=TOKEN) as github:
        github.set_runs(run(51, "success", sha="a" * 40))
        artifact = github.add_artifact(51, "eventmesh-package", b"PK zip bytes")
        settings = CiSettings(
            provider="github",
            repository=github.repository,
            workflow=github.workflow,
            api_url=github.url,
            token_env="CI_TOKEN",
        )

        async def download() -> int:
            async with httpx.AsyncClient() as http:
                client = CiClient(settings, http, {"CI_TOKEN": TOKEN})
                (found,) = await client.commit_runs("a" * 40)
                url = await client.artifact_url(found, "eventmesh-package")
                return await client.download(url, tmp_path / "a.zip")

        assert asyncio.run(download()) == len(b"PK zip bytes")
        assert (tmp_path / "a.zip").read_bytes() == b"PK zip bytes"
        zip_request, blob = github.requests[-2:]
        assert zip_request.path.endswith(f"/actions/artifacts/{artifact}/zip")
        assert zip_request.headers["authorization"] == f"Bearer {TOKEN}"
        assert blob.path == f"/blob/{artifact}" and "authorization" not in blob.headers
