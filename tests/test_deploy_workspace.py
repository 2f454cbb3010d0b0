"""Each deploy's own workspace (bot/runbook/changes/workspace.py): a git worktree at the
commit, or a clean copy; removed afterwards with whatever still runs in it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import psutil

from bot.config import Config
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest
from bot.runbook.changes.prepare import Prepare
from bot.runbook.changes.progress import Event, Finished
from bot.runbook.changes.workspace import open_workspace, remove_workspace
from bot.runbook.health.probe import Prober
from bot.transport import LocalTransport, open_transports
from tests.support.deploy_env import demo_target


def git(workdir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_a_git_checkout_is_built_at_its_commit_never_with_uncommitted_edits(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    (repo / "service").mkdir(parents=True)
    (repo / "service" / "main.txt").write_text("committed\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "service" / "main.txt").write_text("edited, not committed\n")
    root = tmp_path / "data" / "workspaces"

    async def go() -> None:
        workspace = await open_workspace(repo / "service", root, "production")
        assert workspace.commit == commit and workspace.git
        # workdir is a folder inside the checkout: the build runs in that folder of the worktree
        assert workspace.path.name == "service" and workspace.path.parent.parent == root
        assert (workspace.path / "main.txt").read_text() == "committed\n"
        assert str(workspace.top) in git(repo, "worktree", "list")
        await remove_workspace(workspace)
        assert not workspace.top.exists() and list(root.iterdir()) == []
        assert str(workspace.top) not in git(repo, "worktree", "list")

    asyncio.run(go())


def test_a_plain_folder_is_copied_without_git_and_the_bots_data(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    (workdir / "src").mkdir(parents=True)
    (workdir / "src" / "a.txt").write_text("source\n")
    (workdir / ".git").mkdir()  # a broken checkout: not one git can read
    (workdir / "data" / "workspaces").mkdir(parents=True)  # the bot's data dir inside workdir
    (workdir / "data" / "eventmesh.db").write_text("the store")
    root = workdir / "data" / "workspaces"

    async def go() -> None:
        workspace = await open_workspace(workdir, root, "staging")
        assert workspace.commit is None and not workspace.git
        copied = sorted(str(p.relative_to(workspace.path)) for p in workspace.path.rglob("*"))
        assert copied == ["src", "src/a.txt"]
        # A build left running in the workspace is stopped with it, its whole group.
        build = subprocess.Popen(
            ["sh", "-c", "sleep 300 & sleep 300"], cwd=workspace.path, start_new_session=True
        )
        await remove_workspace(workspace)
        assert build.wait(timeout=10) != 0
        assert not workspace.path.exists()
        assert not [
            p for p in psutil.process_iter(["cwd"]) if str(workspace.path) in str(p.info["cwd"])
        ]

    asyncio.run(go())


def test_a_build_for_an_approval_that_fails_asks_nothing_and_leaves_no_workspace(
    tmp_path: Path,
) -> None:
    target = demo_target(tmp_path, "production")
    env = target.environment(build="echo compiling; exit 3", requires_approval=True)
    config = Config.model_validate({"environments": {"production": env}})
    root = tmp_path / "data" / "workspaces"

    async def go() -> list[Event]:
        async with httpx.AsyncClient() as http:
            procedure = Prepare(
                DeployRequest(config.environments["production"], "1.0.0", DeployOptions(), "U1"),
                config,
                http=http,
                prober=Prober(),
                open_hosts=lambda e: open_transports(e, config.ssh),
                local=LocalTransport(),
                workspaces=root,
            ).prepare_into(tmp_path / "data" / "approved" / "production-1")
            return [event async for event in procedure.run()]

    events = asyncio.run(go())
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.outcome.state == "failed"
    assert finished.outcome.summary == (
        "The build of v1.0.0 for production failed at Build: `export EVENTMESH_VERSION=1.0.0; "
        "echo compiling; exit 3` exited with status 3. Nothing was asked."
    )
    assert "compiling" in finished.outcome.output
    assert list(root.iterdir()) == []
