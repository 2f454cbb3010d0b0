"""Each deploy's own workspace (bot/runbook/changes/workspace.py): a git worktree at the
commit, or a clean copy; removed afterwards with whatever still runs in it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import psutil

from bot.runbook.changes.workspace import open_workspace, remove_workspace


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
