"""What a rollback can go back to, and the plan it follows: `/rollback`'s choosing half.

    survey (read every host's releases, release log and backups) → choose → a Plan

Choosing is a pure function of what the hosts run and keep (`choose`, or `undo` for the deploy
message's Roll back button). It happens before any lock or message, so a request that cannot
run ("no such release", "nothing to roll back to") is answered at once and changes nothing.
The Plan is pinned: an approver approves exactly it, and the run (rollback.py)
refuses it if a host changed since (`still_holds`).

- No id: the newest release on every host that ran and was neither marked bad nor rolled back
  from — an instant switch of `current` — and only where there is none the newest backup archive
  every host has (not one taken of what every host runs now).
- An id: exactly that release (on every host, never marked bad, ran once) or that backup (on
  every host, never restored and failed).
- Ids are checked against strict patterns before anything is read (`parse_target`), then
  against what the hosts have.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from bot.config import Environment
from bot.runbook.changes import releases
from bot.runbook.changes.activate import one_line, show_version
from bot.runbook.changes.procedure import MAX_PARALLEL_HOSTS, OpenHosts
from bot.runbook.changes.releases import Backup, HostState, Layout, RemoteCommandFailed
from bot.transport.base import Transport, TransportError

log = logging.getLogger(__name__)

STAMP_ONLY = re.compile(r"[0-9]{8}T[0-9]{6}Z")
MAX_ID = 120  # longer than any release id or backup name
HOSTS_NAMED = 5  # a summary names this many hosts of a group, then counts the rest


# --- what was asked for ----------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """`/rollback <env> <id>`: exactly this release, or exactly this backup archive."""

    kind: Literal["release", "backup"]
    id: str


def parse_target(text: str, environment: str) -> Named | None:
    """A release id, a backup name of this environment, or a backup's bare timestamp."""
    if len(text) > MAX_ID:
        return None
    if releases.is_release_id(text):
        return Named("release", text)
    match = releases.BACKUP_NAME.fullmatch(text)
    if match is not None and match[1] == environment:
        return Named("backup", text)
    if STAMP_ONLY.fullmatch(text):
        return Named("backup", f"eventmesh-backup-{environment}-{text}.tar.gz")
    return None


# --- what the hosts have ---------------------------------------------------------------------


@dataclass(frozen=True)
class HostView:
    target: str
    state: HostState | None = None
    backups: tuple[Backup, ...] = ()
    error: str | None = None

    def backup(self, name: str) -> Backup | None:
        return next((b for b in self.backups if b.name == name), None)


@dataclass(frozen=True)
class ReleaseRow:
    """One release id across the hosts that have it."""

    id: str
    version: str | None
    installed_at: datetime | None
    on: tuple[str, ...]
    current_on: tuple[str, ...]
    ran: bool
    good: bool
    bad: str | None  # why it was marked bad ('' when no reason was given); None: it was not
    rolled_back: str | None  # the same for a rollback away from it
    backup: str | None  # the archive a restored release came from


@dataclass(frozen=True)
class BackupRow:
    name: str
    taken_at: datetime
    size: int
    on: tuple[str, ...]
    bad: bool
    release: str | None = None  # what it was taken of, where a release log says
    version: str | None = None


@dataclass(frozen=True)
class Survey:
    """Every host of an environment: its releases and release log, and its backups."""

    environment: str
    hosts: tuple[HostView, ...]

    @property
    def unreadable(self) -> list[HostView]:
        return [v for v in self.hosts if v.state is None]

    def everywhere(self, row: ReleaseRow | BackupRow) -> bool:
        return len(row.on) == len(self.hosts)

    def releases(self) -> list[ReleaseRow]:
        """Newest first (ids start with their UTC time)."""
        found: dict[str, list[tuple[str, releases.Release, bool]]] = {}
        for view in self.hosts:
            if view.state is None:
                continue
            for release in view.state.releases:
                current = view.state.current == release.id
                found.setdefault(release.id, []).append((view.target, release, current))
        rows = []
        for release_id, entries in found.items():
            known = [r for _, r, _ in entries]
            bad = next((r.note for r in known if r.status == "bad"), None)
            rolled = next((r.note for r in known if r.rolled_back), None)
            rows.append(
                ReleaseRow(
                    id=release_id,
                    version=next((r.version for r in known if r.version), None),
                    installed_at=min(
                        (r.installed_at for r in known if r.installed_at), default=None
                    ),
                    on=tuple(t for t, _, _ in entries),
                    current_on=tuple(t for t, _, c in entries if c),
                    ran=any(r.ran for r in known),
                    good=any(r.status == "good" for r in known),
                    bad=bad,
                    rolled_back=rolled,
                    backup=next((r.backup for r in known if r.backup), None),
                )
            )
        return sorted(rows, key=lambda r: r.id, reverse=True)

    @property
    def bad_backups(self) -> frozenset[str]:
        return frozenset(n for v in self.hosts if v.state for n in v.state.bad_backups)

    def backups(self) -> list[BackupRow]:
        """Newest first."""
        found: dict[str, list[tuple[str, Backup]]] = {}
        for view in self.hosts:
            for backup in view.backups:
                found.setdefault(backup.name, []).append((view.target, backup))
        bad = self.bad_backups
        rows = []
        for name, entries in found.items():
            source = next(
                (
                    v.state.backup_of[name]
                    for v in self.hosts
                    if v.state and name in v.state.backup_of
                ),
                (None, None),
            )
            rows.append(
                BackupRow(
                    name=name,
                    taken_at=entries[0][1].taken_at,
                    size=max(b.size for _, b in entries),
                    on=tuple(t for t, _ in entries),
                    bad=name in bad,
                    release=source[0],
                    version=source[1],
                )
            )
        return sorted(rows, key=lambda r: r.name, reverse=True)

    def runs_already(self, row: BackupRow) -> bool:
        """Every host runs the very release the archive was taken of: restoring it changes
        nothing."""
        return all(
            v.state is not None
            and v.state.current is not None
            and v.state.backup_of.get(row.name, (None, None))[0] == v.state.current
            for v in self.hosts
        )


async def look(host: Transport, layout: Layout) -> HostView:
    """One host's releases and backups; a host that cannot be read says why."""
    try:
        state, _ = await releases.inspect(host, layout)
        backups = await releases.list_backups(host, layout)
    except (TransportError, RemoteCommandFailed) as exc:
        return HostView(host.target, error=one_line(exc))
    return HostView(host.target, state, tuple(backups))


async def survey(env: Environment, open_hosts: OpenHosts) -> Survey:
    """Read every host of env (up to MAX_PARALLEL_HOSTS at once). Changes nothing."""
    async with open_hosts(env) as hosts:
        return await _survey(env, hosts)


async def _survey(env: Environment, hosts: Sequence[Transport]) -> Survey:
    layout = Layout.of(env)
    gate = asyncio.Semaphore(MAX_PARALLEL_HOSTS)

    async def one(host: Transport) -> HostView:
        async with gate:
            return await look(host, layout)

    views = await asyncio.gather(*(one(h) for h in hosts))
    return Survey(env.name, tuple(views))


async def plan_rollback(
    env: Environment, open_hosts: OpenHosts, choice: Named | None
) -> RollbackPlan | RollbackRefused:
    """Read the hosts and choose; a backup's version is read from the archive on one host, so
    the request (and an approver) names the version it goes back to. Changes nothing."""
    async with open_hosts(env) as hosts:
        chosen = choose(await _survey(env, hosts), choice)
        if not isinstance(chosen, RollbackPlan) or chosen.kind != "backup" or chosen.version:
            return chosen
        first = next(h for h in hosts if h.target == chosen.moves[0].host)
        try:
            version = await releases.peek_version(first, Layout.of(env), chosen.target)
        except (TransportError, RemoteCommandFailed) as exc:
            log.warning("version of %s not read on %s: %s", chosen.target, first.target, exc)
            return chosen
    if version is None:
        return chosen
    moves = tuple(replace(m, version=version) for m in chosen.moves)
    return replace(chosen, version=version, moves=moves)


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackRefused:
    """Why a rollback cannot be planned; nothing was changed."""

    reason: str


@dataclass(frozen=True)
class Move:
    """One host: what it runs now, and what it goes back to."""

    host: str
    current: str | None  # release id current when planned (None: nothing, or a hand-made bin/)
    current_version: str | None
    release: str | None = None  # switch to this release kept on the host …
    backup: str | None = None  # … or restore this archive into a new release and switch to it
    version: str | None = None  # the target's version, where known
    adopt: bool = False  # the host has a hand-made bin/: it becomes a release first

    @property
    def target(self) -> str:
        return self.release or self.backup or ""

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "current": self.current,
            "current_version": self.current_version,
            "release": self.release,
            "backup": self.backup,
            "version": self.version,
            "adopt": self.adopt,
        }

    @classmethod
    def from_dict(cls, data: object) -> Move:
        if not isinstance(data, dict):
            raise ValueError("a move is a mapping")
        move = cls(
            host=str(data["host"]),
            current=_optional(data.get("current"), releases.is_release_id),
            current_version=_optional(data.get("current_version"), releases.is_version),
            release=_optional(data.get("release"), releases.is_release_id),
            backup=_optional(
                data.get("backup"), lambda v: releases.BACKUP_NAME.fullmatch(v) is not None
            ),
            version=_optional(data.get("version"), releases.is_version),
            adopt=bool(data.get("adopt")),
        )
        if (move.release is None) == (move.backup is None):
            raise ValueError("a move goes to one release or one backup")
        return move


def _optional(value: object, valid: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not valid(value):  # type: ignore[operator]
        raise ValueError(f"{str(value)[:80]!r} is not valid here")
    return value


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback does, host by host: pinned when asked, checked again when it runs."""

    environment: str
    kind: Literal["release", "backup"]
    target: str  # the release id, or the backup name
    version: str | None
    moves: tuple[Move, ...]
    staying: tuple[str, ...] = ()  # hosts that already run the target
    # How the release left is marked: 'rolled_back' for /rollback, 'bad' when the deploy
    # aftercare's Roll back button undoes a deploy whose checks saw it fail.
    verdict: Literal["rolled_back", "bad"] = "rolled_back"
    undoing: int | None = None  # that deploy's id

    @property
    def from_text(self) -> str:
        return _from_text([(m.current, m.current_version) for m in self.moves])

    @property
    def to_text(self) -> str:
        if self.version:
            return show_version(self.version)
        return f"release {self.target}" if self.kind == "release" else f"backup {self.target}"

    @property
    def title(self) -> str:
        return f"Roll back {self.environment}: {self.from_text} → {self.to_text}"

    def target_line(self) -> str:
        """'release 2026…-1.4.1 (v1.4.1)' or 'backup eventmesh-backup-… (v1.4.1)'."""
        version = f" ({show_version(self.version)})" if self.version else ""
        what = "release" if self.kind == "release" else "backup"
        return f"{what} {self.target}{version}"

    def as_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "kind": self.kind,
            "target": self.target,
            "version": self.version,
            "moves": [m.as_dict() for m in self.moves],
            "staying": list(self.staying),
            "verdict": self.verdict,
            "undoing": self.undoing,
        }

    @classmethod
    def from_dict(cls, data: object) -> RollbackPlan:
        """Raises ValueError (or KeyError, TypeError) for anything that is not a plan."""
        if not isinstance(data, dict):
            raise ValueError("a plan is a mapping")
        kind = data["kind"]
        verdict = data.get("verdict", "rolled_back")
        if kind not in ("release", "backup") or verdict not in ("rolled_back", "bad"):
            raise ValueError("not a plan")
        undoing = data.get("undoing")
        moves = tuple(Move.from_dict(m) for m in data["moves"])
        if not moves:
            raise ValueError("a plan moves at least one host")
        target = str(data["target"])
        if not (releases.is_release_id(target) or releases.BACKUP_NAME.fullmatch(target)):
            raise ValueError(f"{target[:80]!r} is not a release id or a backup name")
        return cls(
            environment=str(data["environment"]),
            kind=kind,
            target=target,
            version=_optional(data.get("version"), releases.is_version),
            moves=moves,
            staying=tuple(str(h) for h in data.get("staying", [])),
            verdict=verdict,
            undoing=int(undoing) if isinstance(undoing, int) else None,
        )


def _from_text(currents: Sequence[tuple[str | None, str | None]]) -> str:
    """What the hosts ran, in a few words: 'v1.4.2', 'release <id>', 'what each host ran'."""
    versions = {version for _, version in currents}
    if len(versions) == 1 and None not in versions:
        return show_version(str(versions.pop()))
    ids = {current for current, _ in currents}
    if len(ids) == 1:
        current = ids.pop()
        return f"release {current}" if current else "a hand-made install"
    return "what each host ran"


def recorded_title(
    environment: str, hosts: dict[str, dict[str, object]], version: str | None
) -> str:
    """A rollback's title again, from what its deployment record keeps (after a restart)."""
    moved = [h for h in hosts.values() if h.get("state") != "already"]
    currents = [(_text_or_none(h.get("from")), _text_or_none(h.get("from_version"))) for h in moved]
    if version:
        to = show_version(version)
    else:
        backups = {_text_or_none(h.get("backup")) for h in moved}
        targets = {_text_or_none(h.get("to")) for h in moved}
        if len(backups) == 1 and None not in backups:
            to = f"backup {backups.pop()}"
        elif len(targets) == 1 and None not in targets:
            to = f"release {targets.pop()}"
        else:
            to = "the chosen release"
    return f"Roll back {environment}: {_from_text(currents) if moved else 'nothing'} → {to}"


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def hosts_text(hosts: Sequence[str]) -> str:
    named = ", ".join(hosts[:HOSTS_NAMED])
    more = len(hosts) - HOSTS_NAMED
    return f"{named} and {more} more" if more > 0 else named


def _unreadable(survey: Survey) -> RollbackRefused | None:
    broken = survey.unreadable
    if not broken:
        return None
    first = broken[0]
    more = f" (and {len(broken) - 1} more host(s))" if len(broken) > 1 else ""
    return RollbackRefused(
        f"Cannot read {first.target}{more}, so {survey.environment} cannot be rolled back: "
        f"{first.error}. Nothing was changed."
    )


def choose(survey: Survey, choice: Named | None) -> RollbackPlan | RollbackRefused:
    """The plan for `/rollback <env> [<id>]`, or why there is none. Pure: reads the survey."""
    env = survey.environment
    refused = _unreadable(survey)
    if refused is not None:
        return refused
    states = [v.state for v in survey.hosts if v.state is not None]
    if not any(s.has_deployment for s in states):
        return RollbackRefused(
            f"Nothing is installed on {env} yet: there is nothing to roll back to."
        )
    listing = f"`/rollback list {env}` shows what each host has."
    if choice is None:
        return _previous_good(survey, listing)
    if choice.kind == "release":
        return _named_release(survey, choice.id, listing)
    return _named_backup(survey, choice.id, listing)


def _previous_good(survey: Survey, listing: str) -> RollbackPlan | RollbackRefused:
    """No id: the newest release that ran and is good, else the newest usable backup."""
    env, rows, views = survey.environment, survey.releases(), survey.hosts
    release = next(
        (
            r
            for r in rows
            if survey.everywhere(r)
            and r.ran
            and r.bad is None
            and r.rolled_back is None
            and len(r.current_on) < len(views)
        ),
        None,
    )
    if release is not None:
        return _to_release(survey, release)
    backup = next(
        (
            b
            for b in survey.backups()
            if survey.everywhere(b) and not b.bad and not survey.runs_already(b)
        ),
        None,
    )
    if backup is not None:
        return _to_backup(survey, backup)
    undo = next(
        (r for r in rows if survey.everywhere(r) and r.rolled_back is not None and not r.bad),
        None,
    )
    hint = (
        f" Release {undo.id} was rolled back from: `/rollback {env} {undo.id}` goes back to it."
        if undo is not None
        else ""
    )
    return RollbackRefused(
        f"Nothing to roll back to on {env}: no earlier release that ran (and was neither "
        "marked bad nor rolled back from) is on every host, and no backup archive of "
        f"something else is on every host.{hint} {listing}"
    )


def _named_release(survey: Survey, release_id: str, listing: str) -> RollbackPlan | RollbackRefused:
    env, views = survey.environment, survey.hosts
    row = next((r for r in survey.releases() if r.id == release_id), None)
    if row is None:
        return RollbackRefused(f"There is no release {release_id} on {env}'s hosts. {listing}")
    missing = [v.target for v in views if v.target not in row.on]
    if missing:
        return RollbackRefused(
            f"Release {release_id} is not on {hosts_text(missing)} (it is on "
            f"{hosts_text(list(row.on))}): a rollback goes to the same release on every "
            f"host. {listing}"
        )
    if row.bad is not None:
        why = f": {row.bad}" if row.bad else ""
        return RollbackRefused(
            f"Release {release_id} was marked bad{why}. A rollback never goes back to a "
            "release that failed its health check."
        )
    if not row.ran:
        return RollbackRefused(
            f"Release {release_id} never ran on {env} (a deploy unpacked it and stopped "
            "before switching to it): it is no rollback target. Deploy its version instead."
        )
    if len(row.current_on) == len(views):
        return RollbackRefused(f"{env} already runs release {release_id} on every host.")
    return _to_release(survey, row)


def _named_backup(survey: Survey, name: str, listing: str) -> RollbackPlan | RollbackRefused:
    env = survey.environment
    row = next((b for b in survey.backups() if b.name == name), None)
    if row is None:
        return RollbackRefused(f"There is no backup {name} on {env}'s hosts. {listing}")
    missing = [v.target for v in survey.hosts if v.target not in row.on]
    if missing:
        return RollbackRefused(
            f"Backup {name} is not on {hosts_text(missing)}: a rollback restores the same "
            f"archive on every host. {listing}"
        )
    if row.bad:
        return RollbackRefused(
            f"Backup {name} was restored before and failed its health check: a rollback "
            "never lands on it again."
        )
    return _to_backup(survey, row)


def _to_release(survey: Survey, row: ReleaseRow) -> RollbackPlan:
    moves, staying = [], []
    for view in survey.hosts:
        state = view.state
        assert state is not None
        if state.current == row.id:
            staying.append(view.target)
            continue
        current = state.current_release
        moves.append(
            Move(
                view.target,
                state.current,
                current.version if current else None,
                release=row.id,
                version=row.version,
                adopt=state.needs_adoption,
            )
        )
    return RollbackPlan(
        survey.environment, "release", row.id, row.version, tuple(moves), tuple(staying)
    )


def _to_backup(survey: Survey, row: BackupRow) -> RollbackPlan:
    moves = []
    for view in survey.hosts:
        state = view.state
        assert state is not None
        current = state.current_release
        moves.append(
            Move(
                view.target,
                state.current,
                current.version if current else None,
                backup=row.name,
                version=row.version,
                adopt=state.needs_adoption,
            )
        )
    return RollbackPlan(survey.environment, "backup", row.name, row.version, tuple(moves))


def undo(
    survey: Survey,
    *,
    deployment_id: int,
    release_id: str | None,
    version: str | None,
    hosts: dict[str, dict[str, object]],
) -> RollbackPlan | RollbackRefused:
    """The plan that undoes one deploy: each host it switched goes back to what it ran before
    (or the deploy's backup where that release is gone); the deployed release is marked bad."""
    env = survey.environment
    refused = _unreadable(survey)
    if refused is not None:
        return refused
    views = {v.target: v for v in survey.hosts}
    moves: list[Move] = []
    for target, info in hosts.items():
        if not info.get("changed"):
            continue
        view = views.get(target)
        if view is None or view.state is None:
            return RollbackRefused(
                f"{target} is no longer one of {env}'s hosts: use /rollback {env}."
            )
        state = view.state
        if release_id is None or state.current != release_id:
            return RollbackRefused(
                f"{target} runs {state.current or 'no release'} now, not {release_id} from deploy "
                f"#{deployment_id}: something changed it since. Use /rollback {env}."
            )
        previous = info.get("previous")
        previous_version = info.get("previous_version")
        back_version = previous_version if isinstance(previous_version, str) else None
        backup = info.get("backup")
        if isinstance(previous, str) and state.release(previous) is not None:
            moves.append(Move(target, release_id, version, release=previous, version=back_version))
        elif isinstance(backup, str) and view.backup(backup) is not None:
            moves.append(Move(target, release_id, version, backup=backup, version=back_version))
        else:
            return RollbackRefused(
                f"{target} has nothing to go back to: the release it ran before deploy "
                f"#{deployment_id} is gone and that deploy left no backup there."
            )
    if not moves:
        return RollbackRefused(
            f"Deploy #{deployment_id} switched no host: there is nothing to undo."
        )
    first = moves[0]
    versions = {m.version for m in moves}
    return RollbackPlan(
        env,
        "release" if first.release else "backup",
        first.target,
        versions.pop() if len(versions) == 1 else None,
        tuple(moves),
        verdict="bad",
        undoing=deployment_id,
    )


def still_holds(move: Move, view: HostView) -> str | None:
    """Why a pinned move no longer fits its host (None: it does)."""
    state = view.state
    if state is None:
        return view.error or "cannot be read"
    if state.current != move.current:
        return (
            f"it runs {state.current or 'no release'} now, not {move.current or 'nothing'} as "
            "when this rollback was asked for: nothing was changed; ask again"
        )
    if move.release is not None:
        release = state.release(move.release)
        if release is None:
            return f"release {move.release} is no longer there"
        if release.status == "bad":
            return f"release {move.release} was marked bad since: {release.note or 'no reason'}"
    elif move.backup is not None:
        if view.backup(move.backup) is None:
            return f"backup {move.backup} is no longer there"
        if move.backup in state.bad_backups:
            return f"backup {move.backup} was marked bad since"
    return None
