"""A deploy's own build workspace: never the shared `workdir` itself.

- `workdir` a git checkout: `git worktree add --detach <dir> <commit>` at the commit HEAD names
  now, so what is built is exactly that commit (uncommitted edits in `workdir` are not in it).
- otherwise: a clean copy of `workdir` (without .git, virtualenvs, caches and the bot's own data
  directory when it lies inside), so two environments never build into one directory.

Workspaces live under `<data_dir>/workspaces/` and are removed when the deploy ends, whatever
way it ends. Each has a `<name>.owner` file (this process); a workspace whose owner is gone
(the bot was killed) is removed by `sweep_orphans`, after every process still running in it
(a build the crash left behind, in a process group of its own) has been killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.process import THIS_PROCESS, process_alive
from bot.transport.base import TransportError
from bot.transport.local import LocalTransport

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120.0
# Never copied into a workspace: not the source, and possibly huge (or the bot's own store).
NOT_COPIED = frozenset({".git", ".venv", "venv", "__pycache__", "node_modules"})


class WorkspaceError(Exception):
    """The workspace could not be made; str() says what and what to check."""


@dataclass(frozen=True)
class Workspace:
    path: Path  # where version, build, test and smoke run
    commit: str | None  # the commit built, when workdir is a git checkout
    source: Path  # the workdir it was made from
    git: bool
    root: Path | None = None  # the worktree's top, when path is a folder inside it

    @property
    def top(self) -> Path:
        return self.root or self.path


async def _git(args: list[str], cwd: Path) -> tuple[bool, str]:
    result = await LocalTransport(command_timeout_s=GIT_TIMEOUT_S).run(["git", *args], cwd=str(cwd))
    return result.ok, (result.stdout if result.ok else result.stderr).strip()


async def checkout_of(workdir: Path) -> tuple[Path, str] | None:
    """The checkout workdir is in (its top folder) and the commit HEAD names, or None when
    workdir is not in a git checkout."""
    if not workdir.is_dir():
        return None
    try:
        ok, top = await _git(["rev-parse", "--show-toplevel"], workdir)
        if not ok or not top:
            return None
        ok, sha = await _git(["rev-parse", "HEAD"], workdir)
    except TransportError:
        return None
    return (Path(top).resolve(), sha) if ok and len(sha) == 40 else None


async def open_workspace(
    workdir: Path, root: Path, label: str, *, leave_out: Iterable[Path] = ()
) -> Workspace:
    """A new workspace of workdir under root (see the module's doc)."""
    workdir = workdir.resolve()
    if not workdir.is_dir():
        raise WorkspaceError(f"workdir {workdir} does not exist (check deploy.workdir)")
    root.mkdir(parents=True, exist_ok=True)
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    path = root / name
    (root / f"{name}.owner").write_text(THIS_PROCESS)
    checkout = await checkout_of(workdir)
    if checkout is not None:
        top, commit = checkout
        ok, said = await _git(["worktree", "add", "--detach", str(path), commit], workdir)
        if not ok:
            _forget(path)
            raise WorkspaceError(f"git worktree add of {commit[:12]} failed: {said[:300]}")
        # workdir may be a folder inside the checkout: the build runs in the same folder.
        inside = path / workdir.relative_to(top)
        return Workspace(inside, commit, workdir, git=True, root=path)
    # Never the workspaces themselves, nor the bot's data dir they live in (its store).
    data_dir = root.parent if root.name == "workspaces" else root
    skipped = {p.resolve() for p in leave_out} | {root.resolve(), data_dir.resolve()}

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        return {n for n in names if n in NOT_COPIED or (here / n).resolve() in skipped}

    try:
        await asyncio.to_thread(shutil.copytree, workdir, path, symlinks=True, ignore=ignore)
    except (OSError, shutil.Error) as exc:
        _forget(path)
        raise WorkspaceError(f"cannot copy {workdir} into a workspace: {exc}") from None
    return Workspace(path, None, workdir, git=False)


async def remove_workspace(workspace: Workspace) -> None:
    """Remove the workspace (and its git worktree registration); never raises."""
    await kill_processes_in(workspace.top)
    if workspace.git:
        with contextlib.suppress(TransportError):
            await _git(["worktree", "remove", "--force", str(workspace.top)], workspace.source)
    await asyncio.to_thread(_forget, workspace.top)
    if workspace.git:
        with contextlib.suppress(TransportError):
            await _git(["worktree", "prune"], workspace.source)


def _forget(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.with_name(f"{path.name}.owner").unlink(missing_ok=True)


async def sweep_orphans(root: Path) -> list[Path]:
    """Workspaces whose bot is gone: their processes killed, the workspaces removed."""
    if not root.is_dir():
        return []
    removed = []
    for owner_file in sorted(root.glob("*.owner")):
        with contextlib.suppress(OSError):
            owner = owner_file.read_text().strip()
            if owner == THIS_PROCESS or process_alive(owner) is not False:
                continue
            path = owner_file.with_suffix("")
            killed = await kill_processes_in(path)
            await asyncio.to_thread(_forget, path)
            log.warning(
                "removed the build workspace %s left by %s (%d process(es) still in it killed)",
                path,
                owner,
                killed,
            )
            removed.append(path)
    return removed


async def kill_processes_in(path: Path) -> int:
    """SIGKILL every process group whose member runs in path (its cwd is inside it): a build
    started in its own session outlives the bot that started it."""
    groups = await asyncio.to_thread(_groups_in, path.resolve())
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return len(groups)


def _groups_in(path: Path) -> set[int]:
    mine = os.getpgrp()
    groups: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return groups
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            if cwd == path or path in cwd.parents:
                group = os.getpgid(int(entry.name))
                if group != mine:
                    groups.add(group)
        except (OSError, ValueError):
            continue
    return groups
