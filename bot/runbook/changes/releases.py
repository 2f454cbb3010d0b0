"""The release layout on a host, its release log, and its backups: shared by /deploy and /rollback.

On every host of an environment, `install_dir` looks like this:

    <install_dir>/
      releases/<release-id>/bin/<artifact>   one folder per installed release (+ MANIFEST, VERSION)
      current -> releases/<release-id>       switched atomically: a new link, then rename over it
      bin -> current/bin                     so <install_dir>/bin/<artifact> is the current one
      packages/eventmesh-<version>.tar.gz    what was uploaded (a re-deploy skips the upload)
      releases.log                           one JSON line per event: installed, adopted, restored,
                                             current, good, bad, rolled_back, backed_up

A running binary is never overwritten ("Text file busy"): a new release is unpacked into its
own folder and becomes current by a rename(2) of the `current` link. Rolling back is the same
switch to an older folder. A hand-made `bin/` folder (the runbook's `scp … /opt/eventmesh/dev/bin/`)
is copied into a release of its own on the first deploy and `bin` becomes the link.

Backups are `<backup_dir>/eventmesh-backup-<env>-<UTC timestamp>.tar.gz` of the current
release's tree (`bin/…`, plus MANIFEST and VERSION when the release has them).

Every remote command is an argv list (bot/transport/base.py quotes each word) or a constant
`sh -c` script that takes its values as positional parameters: a version or a release id can
never become shell syntax. Versions and ids are also checked against strict patterns first.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from bot.config import Environment
from bot.process import kill_point
from bot.transport.base import CommandResult, Transport

VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")
STAMP = "%Y%m%dT%H%M%SZ"
_STAMP = r"[0-9]{8}T[0-9]{6}Z"
RELEASE_ID = re.compile(rf"({_STAMP})-([A-Za-z0-9._-]{{1,64}})")
BACKUP_NAME = re.compile(rf"eventmesh-backup-([a-z][a-z0-9_-]{{0,31}})-({_STAMP})\.tar\.gz")
ADOPTED = "adopted"
RESTORED = "restored"
LOG_NAME = "releases.log"
MANIFEST = "MANIFEST"
VERSION_FILE = "VERSION"

BinKind = Literal["none", "dir", "link"]


def is_version(text: str) -> bool:
    return VERSION.fullmatch(text) is not None


def is_release_id(text: str) -> bool:
    return RELEASE_ID.fullmatch(text) is not None


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(STAMP)


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


def new_release_id(at: datetime, version: str) -> str:
    """'<UTC timestamp>-<version>': sorts by time, and says what it holds."""
    if not is_version(version):
        raise ValueError(f"{version!r} is not a version")
    return f"{stamp(at)}-{version}"


def backup_name(environment: str, at: datetime) -> str:
    return f"eventmesh-backup-{environment}-{stamp(at)}.tar.gz"


def package_name(version: str) -> str:
    if not is_version(version):
        raise ValueError(f"{version!r} is not a version")
    return f"eventmesh-{version}.tar.gz"


class RemoteCommandFailed(Exception):
    """A layout command exited non-zero; str() is one line naming host, command and cause."""

    def __init__(self, result: CommandResult) -> None:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()
        cause = last[-1] if last else "no output"
        command = result.command if len(result.command) <= 120 else result.command[:119] + "…"
        super().__init__(
            f"{result.target}: `{command}` exited with status {result.exit_status}: {cause}"
        )
        self.result = result


@dataclass(frozen=True)
class Release:
    """One release as the host's folders and its release log know it."""

    id: str
    version: str | None
    installed_at: datetime | None
    status: Literal["good", "bad", "new"] = "new"
    note: str = ""
    # Was it ever current? A release unpacked by a deploy that stopped before its restart
    # never ran, and is no target for a rollback.
    was_current: bool = False
    # A /rollback went away from it (and nothing has proved it good since): a later rollback
    # goes further back, not to it; naming it (`/rollback <env> <id>`) undoes that rollback.
    rolled_back: bool = False
    backup: str | None = None  # the archive a restored release was unpacked from
    backed_up_as: tuple[str, ...] = ()  # archives taken of it while it was current

    @property
    def ran(self) -> bool:
        return self.was_current or self.status == "good"

    @property
    def usable(self) -> bool:
        """A target for a rollback that picks by itself: it ran, and nothing speaks against it."""
        return self.ran and self.status != "bad" and not self.rolled_back


@dataclass(frozen=True)
class HostState:
    """What one host has: the current release, the kept ones, and how `bin` looks."""

    target: str
    exists: bool
    current: str | None
    bin: BinKind
    releases: tuple[Release, ...]  # on disk, newest first
    # Backups whose restored release failed its health check: no rollback lands on them again.
    bad_backups: frozenset[str] = frozenset()
    # What each backup archive was taken of, where the log says: (release id, version).
    backup_of: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def needs_adoption(self) -> bool:
        """A hand-made plain bin/ folder that the first deploy turns into a release."""
        return self.bin == "dir"

    @property
    def has_deployment(self) -> bool:
        return self.current is not None or self.bin == "dir"

    def release(self, release_id: str) -> Release | None:
        return next((r for r in self.releases if r.id == release_id), None)

    @property
    def current_release(self) -> Release | None:
        return self.release(self.current) if self.current else None

    def previous_good(self, *, excluding: Iterable[str] = ()) -> Release | None:
        """The newest release on disk, other than current, that ran, was not marked bad and
        was not rolled back from."""
        skip = {self.current, *excluding}
        return next((r for r in self.releases if r.id not in skip and r.usable), None)


@dataclass(frozen=True)
class Backup:
    name: str
    taken_at: datetime
    size: int


@dataclass(frozen=True)
class Layout:
    """The paths of one environment's install on a host, and the commands that change it."""

    environment: str
    install_dir: str
    backup_dir: str
    keep_releases: int = 5
    keep_backups: int = 10

    @classmethod
    def of(cls, env: Environment) -> Layout:
        return cls(
            environment=env.name,
            install_dir=env.deploy.install_dir.rstrip("/") or "/",
            backup_dir=env.deploy.backup_dir.rstrip("/") or "/",
            keep_releases=env.deploy.keep_releases,
            keep_backups=env.deploy.keep_backups,
        )

    def path(self, *parts: str) -> str:
        return posixpath.join(self.install_dir, *parts)

    @property
    def releases_dir(self) -> str:
        return self.path("releases")

    @property
    def current(self) -> str:
        return self.path("current")

    @property
    def bin(self) -> str:
        return self.path("bin")

    @property
    def log(self) -> str:
        return self.path(LOG_NAME)

    def release_dir(self, release_id: str) -> str:
        _check_release_id(release_id)
        return self.path("releases", release_id)

    def package_path(self, version: str) -> str:
        return self.path("packages", package_name(version))

    def backup_path(self, name: str) -> str:
        if BACKUP_NAME.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not a backup name")
        return posixpath.join(self.backup_dir, name)

    # --- reading ---------------------------------------------------------------------------

    def inspect_command(self) -> list[str]:
        return ["sh", "-c", _INSPECT, "inspect", self.install_dir]

    def list_backups_command(self) -> list[str]:
        return ["sh", "-c", _LIST_BACKUPS, "list-backups", self.backup_dir, self.environment]

    # --- changing --------------------------------------------------------------------------

    def adopt_commands(self, release_id: str) -> list[list[str]]:
        """Copy a hand-made bin/ into a release of its own (a hidden copy renamed in whole),
        make it current, swap bin for the link (two renames: a kill between them leaves no
        `bin` beside `current`, which leftovers.py relinks)."""
        partial = self.path("releases", f".partial-{release_id}")
        return [
            ["rm", "-rf", partial],
            ["mkdir", "-p", partial],
            ["cp", "-a", self.bin, posixpath.join(partial, "bin")],
            ["mv", "-T", partial, self.release_dir(release_id)],
            *self._link_commands(release_id),
            ["mv", "-T", self.bin, self.path(".bin.adopted")],
            ["mv", "-T", self.path(".bin.new"), self.bin],
            ["rm", "-rf", self.path(".bin.adopted")],
        ]

    def unpack_commands(self, release_id: str, package: str) -> list[list[str]]:
        """Unpack into a hidden folder, check every file against MANIFEST, then rename it in.

        A failed or interrupted unpack never leaves a folder that looks like a release.
        """
        partial = self.path("releases", f".partial-{release_id}")
        return [
            ["rm", "-rf", partial],
            ["mkdir", "-p", partial],
            # -m: files get the time they were installed, not the package's fixed one.
            ["tar", "-xzmf", package, "-C", partial],
            ["sh", "-c", _CHECK_MANIFEST, "check-manifest", partial],
            ["mv", "-T", partial, self.release_dir(release_id)],
        ]

    def restore_commands(self, release_id: str, backup: str) -> list[list[str]]:
        """Unpack a backup archive into a new release folder (the current one is kept)."""
        partial = self.path("releases", f".partial-{release_id}")
        return [
            ["rm", "-rf", partial],
            ["mkdir", "-p", partial],
            ["tar", "-xzf", self.backup_path(backup), "-C", partial],
            ["test", "-d", posixpath.join(partial, "bin")],
            ["sh", "-c", _CHECK_MANIFEST, "check-manifest", partial],
            ["mv", "-T", partial, self.release_dir(release_id)],
        ]

    def switch_commands(self, release_id: str) -> list[list[str]]:
        """Make release_id current: rename(2) over `current`, atomic for anyone reading it."""
        return [*self._link_commands(release_id), ["mv", "-T", self.path(".bin.new"), self.bin]]

    def _link_commands(self, release_id: str) -> list[list[str]]:
        self.release_dir(release_id)  # checks the id
        new_current = self.path(".current.new")
        return [
            ["ln", "-sfn", posixpath.join("releases", release_id), new_current],
            ["mv", "-T", new_current, self.current],
            # bin -> current/bin: the same link every time, so renaming it over bin changes
            # nothing after the first deploy.
            ["ln", "-sfn", posixpath.join("current", "bin"), self.path(".bin.new")],
        ]

    def read_version_command(self, release_id: str) -> list[str]:
        """Prints the release's VERSION file (nothing when it has none)."""
        version = posixpath.join(self.release_dir(release_id), VERSION_FILE)
        return ["sh", "-c", 'if [ -f "$1" ]; then head -c 200 "$1"; fi', "read-version", version]

    def peek_version_command(self, backup: str) -> list[str]:
        """Prints the VERSION file inside a backup archive (nothing when it has none); GNU tar
        stops reading at the first match."""
        return [
            "sh",
            "-c",
            'tar -xzOf "$1" --occurrence=1 ./VERSION 2>/dev/null | head -c 200',
            "peek-version",
            self.backup_path(backup),
        ]

    def check_files_command(self, release_id: str) -> list[str]:
        """Checks the release's files against its MANIFEST ('manifest checked', or 'manifest
        none' without one), then lists bin/: 'x name' for an executable file, '- name' else."""
        return ["sh", "-c", _CHECK_FILES, "check-files", self.release_dir(release_id)]

    def log_command(self, event: dict[str, object]) -> list[str]:
        line = json.dumps(event, sort_keys=True, separators=(",", ":"))
        return ["sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "log", line, self.log]

    def backup_commands(self, name: str, source: Literal["current", "bin"]) -> list[list[str]]:
        """Archive the current deployment through a hidden name, renamed once complete."""
        final = self.backup_path(name)
        partial = posixpath.join(self.backup_dir, f".{name}.partial")
        if source == "current":
            archive = ["tar", "-czf", partial, "-C", self.current, "."]
        else:
            archive = ["tar", "-czf", partial, "-C", self.install_dir, "bin"]
        return [["mkdir", "-p", self.backup_dir], archive, ["mv", "-T", partial, final]]

    def remove_backups_command(self, names: Sequence[str]) -> list[str]:
        return ["rm", "-f", "--", *(self.backup_path(n) for n in names)]

    def remove_releases_command(self, release_ids: Sequence[str]) -> list[str]:
        return ["rm", "-rf", "--", *(self.release_dir(r) for r in release_ids)]

    def remove_packages_command(self, versions: Sequence[str]) -> list[str]:
        return ["rm", "-f", "--", *(self.package_path(v) for v in versions)]


def _check_release_id(release_id: str) -> None:
    if not is_release_id(release_id):
        raise ValueError(f"{release_id!r} is not a release id")


# Scripts are one line with double quotes inside, so a dry run shows them readably. Values come
# in as positional parameters ($1, $2), never inside the script text.

# Prints the state of an install_dir in lines parse_inspect reads.
_INSPECT = (
    'd=$1; if [ ! -d "$d" ]; then echo absent; exit 0; fi; cd "$d" || exit 1; echo present; '
    'if [ -L current ]; then printf "current %s\\n" "$(readlink current)"; fi; '
    'if [ -L bin ]; then echo "bin link"; elif [ -d bin ]; then echo "bin dir"; fi; '
    'for r in releases/*; do if [ -d "$r" ]; then printf "release %s\\n" "${r#releases/}"; fi; '
    "done; "
    'for p in packages/*.tar.gz; do if [ -f "$p" ]; then printf "package %s\\n" '
    '"${p#packages/}"; fi; done; echo log; if [ -f releases.log ]; then cat releases.log; fi'
)

_LIST_BACKUPS = (
    'cd "$1" 2>/dev/null || exit 0; for f in "eventmesh-backup-$2-"*.tar.gz; do '
    'if [ -f "$f" ]; then printf "%s %s\\n" "$f" "$(wc -c < "$f")"; fi; done'
)

# A release built by /deploy carries MANIFEST (sha256sum lines); a hand-made or restored one
# may not, and then there is nothing to check it against.
_CHECK_MANIFEST = (
    'cd "$1" || exit 1; if [ -f MANIFEST ]; then sha256sum -c --quiet --strict MANIFEST; fi'
)


# The restored (or kept) tree a rollback is about to run: its files as MANIFEST says, and what
# bin/ holds, so the config's artifacts can be looked for in it.
_CHECK_FILES = (
    'cd "$1" || exit 1; if [ -f MANIFEST ]; then sha256sum -c --quiet --strict MANIFEST || '
    'exit 1; echo "manifest checked"; else echo "manifest none"; fi; '
    'if [ ! -d bin ]; then echo "no bin/ folder in $1" >&2; exit 3; fi; cd bin; '
    'for f in * .[!.]*; do if [ -f "$f" ]; then if [ -x "$f" ]; then printf "x %s\\n" "$f"; '
    'else printf -- "- %s\\n" "$f"; fi; fi; done'
)


def parse_bin_listing(output: str) -> dict[str, bool]:
    """{file name: executable} from the check-files script's output."""
    files = {}
    for line in output.splitlines():
        mark, _, name = line.partition(" ")
        if mark in ("x", "-") and name:
            files[name] = mark == "x"
    return files


def parse_inspect(target: str, output: str) -> tuple[HostState, list[str]]:
    """The HostState and the package names from the inspect script's output."""
    lines = output.splitlines()
    if not lines or lines[0].strip() == "absent":
        return HostState(target, False, None, "none", ()), []
    current: str | None = None
    bin_kind: BinKind = "none"
    on_disk: list[str] = []
    packages: list[str] = []
    log_lines: list[str] = []
    in_log = False
    for line in lines[1:]:
        if in_log:
            log_lines.append(line)
            continue
        word, _, rest = line.partition(" ")
        if word == "current":
            name = posixpath.basename(rest.strip().rstrip("/"))
            current = name if is_release_id(name) else None
        elif word == "bin":
            bin_kind = "link" if rest.strip() == "link" else "dir"
        elif word == "release" and is_release_id(rest.strip()):
            on_disk.append(rest.strip())
        elif word == "package":
            packages.append(rest.strip())
        elif word == "log":
            in_log = True
    known = fold_log(log_lines)
    releases = []
    for release_id in sorted(on_disk, reverse=True):
        entry = known.get(release_id) or Release(release_id, _version_of(release_id), None)
        if release_id == current and not entry.was_current:
            entry = _with(entry, was_current=True)
        releases.append(entry)
    # The whole log, not only the folders still on disk: a pruned release's verdict on its
    # backup still counts.
    bad_backups = frozenset(r.backup for r in known.values() if r.status == "bad" and r.backup)
    backup_of = {name: (r.id, r.version) for r in known.values() for name in r.backed_up_as}
    state = HostState(target, True, current, bin_kind, tuple(releases), bad_backups, backup_of)
    return state, packages


def _version_of(release_id: str) -> str | None:
    match = RELEASE_ID.fullmatch(release_id)
    if match is None or match[2] in (ADOPTED, RESTORED):
        return None
    return match[2]


def fold_log(lines: Iterable[str]) -> dict[str, Release]:
    """Replay the release log: each release's version, install time and last verdict."""
    releases: dict[str, Release] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a full disk must not hide the rest
        if not isinstance(event, dict):
            continue
        release_id = str(event.get("release", ""))
        if not is_release_id(release_id):
            continue
        kind = event.get("event")
        at = _parse_time(event.get("at"))
        known = releases.get(release_id)
        if kind in ("installed", "adopted", "restored"):
            version = event.get("version")
            backup = event.get("backup")
            if not (isinstance(backup, str) and BACKUP_NAME.fullmatch(backup)):
                backup = None
            releases[release_id] = Release(
                release_id,
                str(version) if isinstance(version, str) else _version_of(release_id),
                at,
                note=str(event.get("note", "")),
                backup=backup,
            )
        elif known is None:
            continue
        elif kind == "current":
            releases[release_id] = _with(known, was_current=True)
        elif kind == "good":
            releases[release_id] = _with(known, status="good", rolled_back=False)
        elif kind == "bad":
            releases[release_id] = _with(known, status="bad", note=str(event.get("reason", "")))
        elif kind == "rolled_back":
            releases[release_id] = _with(known, rolled_back=True, note=str(event.get("reason", "")))
        elif kind == "backed_up":
            backup = event.get("backup")
            if isinstance(backup, str) and BACKUP_NAME.fullmatch(backup):
                releases[release_id] = _with(known, backed_up_as=(*known.backed_up_as, backup))
    return releases


def _with(release: Release, **changes: object) -> Release:
    return replace(release, **changes)  # type: ignore[arg-type]


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_backups(environment: str, output: str) -> list[Backup]:
    """The environment's backups newest first, from the list-backups script's output."""
    backups = []
    for line in output.splitlines():
        name, _, size = line.strip().partition(" ")
        match = BACKUP_NAME.fullmatch(name)
        # 'staging' must not take 'staging-eu's backups for its own.
        if match is None or match[1] != environment or not size.strip().isdigit():
            continue
        backups.append(Backup(name, parse_stamp(match[2]), int(size)))
    return sorted(backups, key=lambda b: b.name, reverse=True)


def log_event(kind: str, release_id: str, at: datetime, **fields: object) -> dict[str, object]:
    return {"event": kind, "release": release_id, "at": at.isoformat(), **fields}


# --- running the commands ------------------------------------------------------------------


@dataclass
class HostLog:
    """The commands run on one host for one step, for the step's report."""

    results: list[CommandResult] = field(default_factory=list)

    def tail(self, lines: int = 20) -> str:
        return self.results[-1].tail(lines) if self.results else ""


async def run_checked(
    host: Transport,
    commands: Iterable[Sequence[str]],
    log: HostLog | None = None,
    *,
    cwd: str | None = None,
    point: str | None = None,
) -> list[CommandResult]:
    """Run commands in order; the first that fails raises RemoteCommandFailed. `point` names
    the crash tests' kill points after each command ('<point>:<index>', bot/process.py)."""
    results = []
    for index, command in enumerate(commands):
        result = await host.run(list(command), cwd=cwd)
        results.append(result)
        if log is not None:
            log.results.append(result)
        if not result.ok:
            raise RemoteCommandFailed(result)
        if point is not None:
            kill_point(f"{point}:{index}")
    return results


async def inspect(host: Transport, layout: Layout) -> tuple[HostState, list[str]]:
    (result,) = await run_checked(host, [layout.inspect_command()])
    return parse_inspect(host.target, result.stdout)


async def list_backups(host: Transport, layout: Layout) -> list[Backup]:
    (result,) = await run_checked(host, [layout.list_backups_command()])
    return parse_backups(layout.environment, result.stdout)


async def append_log(host: Transport, layout: Layout, event: dict[str, object]) -> None:
    await run_checked(host, [["mkdir", "-p", layout.install_dir], layout.log_command(event)])


async def switch(
    host: Transport, layout: Layout, release_id: str, at: datetime, log: HostLog | None = None
) -> None:
    """Make release_id current (and `bin` the link to it), then record it in the log."""
    await run_checked(host, layout.switch_commands(release_id), log, point="switch")
    await run_checked(host, [layout.log_command(log_event("current", release_id, at))], log)


def adoption(layout: Layout, at: datetime) -> tuple[str, list[list[str]]]:
    """The release id a hand-made bin/ becomes, and the commands that make it so."""
    release_id = f"{stamp(at)}-{ADOPTED}"
    return release_id, [
        ["mkdir", "-p", layout.releases_dir],
        *layout.adopt_commands(release_id),
        layout.log_command(log_event(ADOPTED, release_id, at, note="the hand-made bin/ folder")),
        layout.log_command(log_event("current", release_id, at)),
    ]


async def adopt(host: Transport, layout: Layout, at: datetime, log: HostLog | None = None) -> str:
    """Turn a hand-made bin/ into release '<stamp>-adopted' and make it current."""
    release_id, commands = adoption(layout, at)
    await run_checked(host, commands, log, point="adopt")
    return release_id


async def read_version(host: Transport, layout: Layout, release_id: str) -> str | None:
    """The version a release's VERSION file names, if it has one that is a version."""
    (result,) = await run_checked(host, [layout.read_version_command(release_id)])
    text = result.stdout.strip()
    return text if is_version(text) else None


async def peek_version(host: Transport, layout: Layout, backup: str) -> str | None:
    """The version a backup archive's VERSION file names, read without unpacking it."""
    (result,) = await run_checked(host, [layout.peek_version_command(backup)])
    text = result.stdout.strip()
    return text if is_version(text) else None


async def restore_release(
    host: Transport, layout: Layout, backup: str, at: datetime, log: HostLog | None = None
) -> tuple[str, str | None]:
    """Unpack a backup archive into a new release '<stamp>-restored': its id and version."""
    release_id = f"{stamp(at)}-{RESTORED}"
    await run_checked(host, [["mkdir", "-p", layout.releases_dir]], log)
    await run_checked(host, layout.restore_commands(release_id, backup), log, point="restore")
    version = await read_version(host, layout, release_id)
    fields: dict[str, object] = {"note": f"restored from {backup}", "backup": backup}
    if version is not None:
        fields["version"] = version
    event = log_event(RESTORED, release_id, at, **fields)
    await run_checked(host, [layout.log_command(event)], log)
    return release_id, version


async def restore(
    host: Transport, layout: Layout, backup: str, at: datetime, log: HostLog | None = None
) -> str:
    """Unpack a backup archive into a new release '<stamp>-restored'; returns its id."""
    release_id, _ = await restore_release(host, layout, backup, at, log)
    return release_id


async def take_backup(
    host: Transport, layout: Layout, state: HostState, at: datetime, log: HostLog | None = None
) -> tuple[Backup | None, list[str]]:
    """Archive the current deployment, then prune to keep_backups.

    Returns the new backup (None when the host has nothing deployed yet) and the names of
    the old backups removed.
    """
    if not state.has_deployment:
        return None, []
    name = backup_name(layout.environment, at)
    source: Literal["current", "bin"] = "current" if state.current else "bin"
    await run_checked(host, layout.backup_commands(name, source), log)
    if state.current:
        # The log says what the archive holds: a rollback need not open it to know.
        event = log_event("backed_up", state.current, at, backup=name)
        await run_checked(host, [layout.log_command(event)], log)
    backups = await list_backups(host, layout)
    removed = backups_to_prune(backups, layout.keep_backups, state.current)
    if removed:
        await run_checked(host, [layout.remove_backups_command(removed)], log)
    taken = next((b for b in backups if b.name == name), Backup(name, at, 0))
    return taken, removed


def backups_to_prune(backups: Sequence[Backup], keep: int, current: str | None) -> list[str]:
    """The backups (newest first) beyond the newest `keep`, but never the newest taken before
    the current release (what ran before it): manual backups must not push it out."""
    before = newest_before(backups, current)
    return [b.name for b in backups[keep:] if b != before]


def newest_before(backups: Sequence[Backup], release_id: str | None) -> Backup | None:
    """The newest backup taken no later than release_id was made (its id's timestamp)."""
    match = RELEASE_ID.fullmatch(release_id) if release_id else None
    if match is None:
        return None
    made = parse_stamp(match[1])
    return next((b for b in backups if b.taken_at <= made), None)


async def prune(
    host: Transport, layout: Layout, *, protect: Iterable[str] = (), log: HostLog | None = None
) -> list[str]:
    """Keep the newest keep_releases releases (never current or a protected one); drop the
    packages no kept release came from. Returns the release ids removed."""
    state, packages = await inspect(host, layout)
    keep = {state.current, *protect}
    kept = [r for r in state.releases if r.id in keep]
    for release in state.releases:
        if len(kept) >= layout.keep_releases:
            break
        if release not in kept:
            kept.append(release)
    removed = [r.id for r in state.releases if r not in kept]
    if removed:
        await run_checked(host, [layout.remove_releases_command(removed)], log)
    kept_versions = {r.version for r in kept if r.version}
    stale = [
        name.removeprefix("eventmesh-").removesuffix(".tar.gz")
        for name in packages
        if name.removeprefix("eventmesh-").removesuffix(".tar.gz") not in kept_versions
    ]
    stale = [v for v in stale if is_version(v)]
    if stale:
        await run_checked(host, [layout.remove_packages_command(stale)], log)
    return removed


def shown(command: Sequence[str]) -> str:
    """A command as a person reads it (and as the remote shell runs it)."""
    return shlex.join(command)
