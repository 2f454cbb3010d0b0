"""The runbook's Rollback Procedures (Quick Rollback, Rollback Checklist) and Manual Backups.

    survey → choose (a Plan, or why not) → [approval] → lock → Rollback.run():
      lock → reach the hosts (does the plan still hold?) → restore the backup (every host,
      up to 5 at once) → check the files → one host at a time: stop → switch → start →
      health checks → unlock

Choosing is a pure function of what the hosts run and keep (`survey`, then `choose`, or
`undo` for the deploy message's Roll back button). It happens before any lock or message, so a
request that cannot run ("no such release", "nothing to roll back to") is answered at once and
changes nothing. The Plan is pinned: an approver approves exactly it, and the run refuses it if
a host changed since.

Where this departs from the runbook's Quick Rollback, and why:
- The runbook stops the service and untars a backup over the install. Here the archive is
  unpacked into a new release folder and checked (MANIFEST, the config's artifacts in bin/)
  while the service still runs; only then is each host stopped, switched and started. A
  corrupt or incomplete archive is found before anything stops, the downtime is a switch and a
  start, and the release left stays on disk: the rollback itself can be undone by naming it.
- Without an id, the target is the newest release on every host that ran and was neither
  marked bad nor rolled back from — an instant switch of `current` — and only where there is
  none the newest backup archive every host has.
- A target that fails its health check is marked bad in the release log (a restored release
  carries the archive's name, so the archive counts as bad too): no later rollback lands on it.
  The release rolled back from is marked `rolled_back`: the next `/rollback` goes further back.
- A failure stops the rollback at that host: nothing more is changed, and the outcome says
  which host runs which version. Opening an incident for it is the Slack side's (it pages).

Every remote command is an argv list or a constant script (bot/runbook/releases.py); ids are
checked against strict patterns before anything is planned, and against what the hosts have.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import posixpath
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from bot.clock import Clock, utc_now
from bot.config import Config, Environment
from bot.runbook import releases
from bot.runbook.activate import (
    PASSES_NEEDED,
    Activator,
    Clocked,
    human_duration,
    human_size,
    one_line,
    short,
    show_version,
)
from bot.runbook.deploy import MAX_PARALLEL_HOSTS, OpenHosts, StepError, each_host
from bot.runbook.probe import Prober
from bot.runbook.progress import (
    Event,
    Finished,
    HostsChanged,
    Outcome,
    StepDone,
    StepFailed,
    StepSkipped,
    StepStarted,
    VersionKnown,
    redact,
    tail,
)
from bot.runbook.releases import Backup, HostState, Layout, RemoteCommandFailed
from bot.transport.base import CommandResult, Shell, Transport, TransportError

log = logging.getLogger(__name__)

# The Rollback Checklist, as the message shows it. The last three are done by the Slack side
# once the run is over (they post and page); they show after the outcome.
STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("hosts", "Reach the hosts"),
    ("restore", "Restore the backup"),
    ("files", "Check the files"),
    ("stop", "Stop the service"),
    ("switch", "Switch current"),
    ("start", "Start the service"),
    ("verify", "Health checks"),
    ("unlock", "Unlock"),
    ("followup", "Follow-up checks"),
    ("notify", "Summary in the alerts channel"),
    ("incident", "Incident record"),
)
AFTER_RUN = ("followup", "notify", "incident")
BACKUP_STEPS: tuple[tuple[str, str], ...] = (
    ("lock", "Lock"),
    ("backup", "Back up"),
    ("unlock", "Unlock"),
)
TITLES = dict((*STEPS, *BACKUP_STEPS))

STAMP_ONLY = re.compile(r"[0-9]{8}T[0-9]{6}Z")
MAX_ID = 120  # longer than any release id or backup name
HOSTS_NAMED = 5  # a summary names this many hosts of a group, then counts the rest

HostFate = Literal[
    "untouched", "stop_failed", "switch_failed", "start_failed", "unhealthy", "rolled_back"
]


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
) -> Plan | Refused:
    """Read the hosts and choose; a backup's version is read from the archive on one host, so
    the request (and an approver) names the version it goes back to. Changes nothing."""
    async with open_hosts(env) as hosts:
        chosen = choose(await _survey(env, hosts), choice)
        if not isinstance(chosen, Plan) or chosen.kind != "backup" or chosen.version:
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
class Refused:
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
class Plan:
    """What a rollback does, host by host: pinned when asked, checked again when it runs."""

    environment: str
    kind: Literal["release", "backup"]
    target: str  # the release id, or the backup name
    version: str | None
    moves: tuple[Move, ...]
    staying: tuple[str, ...] = ()  # hosts that already run the target
    # How the release left is marked: 'rolled_back' for /rollback, 'bad' when the deploy
    # message's Roll back button undoes a deploy its watch saw fail.
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
    def from_dict(cls, data: object) -> Plan:
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
        return cls(
            environment=str(data["environment"]),
            kind=kind,
            target=str(data["target"]),
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


def backup_title(environment: str) -> str:
    return f"Back up {environment}"


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _hosts_text(hosts: Sequence[str]) -> str:
    named = ", ".join(hosts[:HOSTS_NAMED])
    more = len(hosts) - HOSTS_NAMED
    return f"{named} and {more} more" if more > 0 else named


def _unreadable(survey: Survey) -> Refused | None:
    broken = survey.unreadable
    if not broken:
        return None
    first = broken[0]
    more = f" (and {len(broken) - 1} more host(s))" if len(broken) > 1 else ""
    return Refused(
        f"Cannot read {first.target}{more}, so {survey.environment} cannot be rolled back: "
        f"{first.error}. Nothing was changed."
    )


def choose(survey: Survey, choice: Named | None) -> Plan | Refused:
    """The plan for `/rollback <env> [<id>]`, or why there is none. Pure: reads the survey."""
    env = survey.environment
    refused = _unreadable(survey)
    if refused is not None:
        return refused
    views = survey.hosts
    states = [v.state for v in views if v.state is not None]
    if not any(s.has_deployment for s in states):
        return Refused(f"Nothing is installed on {env} yet: there is nothing to roll back to.")
    rows, backups = survey.releases(), survey.backups()
    listing = f"`/rollback list {env}` shows what each host has."
    if choice is None:
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
                for b in backups
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
        return Refused(
            f"Nothing to roll back to on {env}: no earlier release that ran (and was neither "
            "marked bad nor rolled back from) is on every host, and no backup archive of "
            f"something else is on every host.{hint} {listing}"
        )
    if choice.kind == "release":
        row = next((r for r in rows if r.id == choice.id), None)
        if row is None:
            return Refused(f"There is no release {choice.id} on {env}'s hosts. {listing}")
        missing = [v.target for v in views if v.target not in row.on]
        if missing:
            return Refused(
                f"Release {choice.id} is not on {_hosts_text(missing)} (it is on "
                f"{_hosts_text(list(row.on))}): a rollback goes to the same release on every "
                f"host. {listing}"
            )
        if row.bad is not None:
            why = f": {row.bad}" if row.bad else ""
            return Refused(
                f"Release {choice.id} was marked bad{why}. A rollback never goes back to a "
                "release that failed its health check."
            )
        if not row.ran:
            return Refused(
                f"Release {choice.id} never ran on {env} (a deploy unpacked it and stopped "
                "before switching to it): it is no rollback target. Deploy its version instead."
            )
        if len(row.current_on) == len(views):
            return Refused(f"{env} already runs release {choice.id} on every host.")
        return _to_release(survey, row)
    backup_row = next((b for b in backups if b.name == choice.id), None)
    if backup_row is None:
        return Refused(f"There is no backup {choice.id} on {env}'s hosts. {listing}")
    missing = [v.target for v in views if v.target not in backup_row.on]
    if missing:
        return Refused(
            f"Backup {choice.id} is not on {_hosts_text(missing)}: a rollback restores the same "
            f"archive on every host. {listing}"
        )
    if backup_row.bad:
        return Refused(
            f"Backup {choice.id} was restored before and failed its health check: a rollback "
            "never lands on it again."
        )
    return _to_backup(survey, backup_row)


def _to_release(survey: Survey, row: ReleaseRow) -> Plan:
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
    return Plan(survey.environment, "release", row.id, row.version, tuple(moves), tuple(staying))


def _to_backup(survey: Survey, row: BackupRow) -> Plan:
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
    return Plan(survey.environment, "backup", row.name, row.version, tuple(moves))


def undo(
    survey: Survey,
    *,
    deployment_id: int,
    release_id: str | None,
    version: str | None,
    hosts: dict[str, dict[str, object]],
) -> Plan | Refused:
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
            return Refused(f"{target} is no longer one of {env}'s hosts: use /rollback {env}.")
        state = view.state
        if release_id is None or state.current != release_id:
            return Refused(
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
            return Refused(
                f"{target} has nothing to go back to: the release it ran before deploy "
                f"#{deployment_id} is gone and that deploy left no backup there."
            )
    if not moves:
        return Refused(f"Deploy #{deployment_id} switched no host: there is nothing to undo.")
    first = moves[0]
    versions = {m.version for m in moves}
    return Plan(
        env,
        "release" if first.release else "backup",
        first.target,
        versions.pop() if len(versions) == 1 else None,
        tuple(moves),
        verdict="bad",
        undoing=deployment_id,
    )


def _still_holds(move: Move, view: HostView) -> str | None:
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


def artifact_names(env: Environment) -> list[str]:
    """What bin/ must hold: the base names of the config's artifact globs."""
    return [posixpath.basename(a.rstrip("/")) for a in env.deploy.artifacts]


def missing_artifacts(patterns: Iterable[str], files: dict[str, bool]) -> list[str]:
    """Problems with bin/: an artifact pattern nothing matches, or a match not executable."""
    problems = []
    for pattern in patterns:
        matched = [name for name in files if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            problems.append(f"no {pattern}")
        problems.extend(f"{name} is not executable" for name in matched if not files[name])
    return problems


# --- the run ------------------------------------------------------------------------------


@dataclass
class HostRun:
    move: Move
    release: str | None = None  # the release it switches to (a restored one once unpacked)
    version: str | None = None
    current: str | None = None  # what it ran (the adopted release, when adopted now)
    restored: str | None = None  # a release unpacked by this rollback
    fate: HostFate = "untouched"


class Rollback:
    def __init__(
        self,
        plan: Plan,
        env: Environment,
        config: Config,
        *,
        prober: Prober,
        open_hosts: OpenHosts,
        requested_by: str,
        clock: Clock = utc_now,
    ) -> None:
        self.plan = plan
        self.env = env
        self.settings = env.deploy
        self.layout = Layout.of(env)
        self.open_hosts = open_hosts
        self.requested_by = requested_by
        self.clock = clock
        self.activator = Activator(env, config, prober, clock=clock)
        self.runs = {m.host: HostRun(m, m.release, m.version, m.current) for m in plan.moves}
        self.clocked = Clocked()

    # --- the procedure ---------------------------------------------------------------------

    async def run(self) -> AsyncIterator[Event]:
        yield StepDone("lock", detail=f"{self.env.name} is locked for this rollback")
        yield HostsChanged(self.hosts())
        async with self.open_hosts(self.env) as hosts:
            async for event in self._run(hosts):
                yield event

    async def _run(self, every_host: list[Transport]) -> AsyncIterator[Event]:
        by_target = {h.target: h for h in every_host}
        gone = [m.host for m in self.plan.moves if m.host not in by_target]
        if gone:
            failure = StepFailed(
                "hosts",
                gone[0],
                0.0,
                f"{_hosts_text(gone)} is no longer one of {self.env.name}'s hosts in the config: "
                "ask again",
            )
            yield failure
            yield StepDone("unlock", detail=f"{self.env.name} is free again")
            yield Finished(self._untouched(failure))
            return
        hosts = [by_target[m.host] for m in self.plan.moves]
        output = self.activator.output
        prepare = [
            ("hosts", hosts, self._check_plan),
            ("restore", [h for h in hosts if self._needs_restore(h)], self._restore),
            ("files", hosts, self._check_files),
        ]
        for step, on, work in prepare:
            if not on:
                yield StepSkipped(
                    step,
                    f"{self.plan.target_line()} is kept on the hosts: nothing to restore, "
                    "the switch is instant",
                )
                continue
            try:
                async for event in each_host(step, on, work, output=output):
                    yield event
            except StepError as failure:
                await self._remove_restored(hosts)
                yield StepDone("unlock", detail=f"{self.env.name} is free again")
                yield Finished(self._untouched(failure.event))
                return
        for index, host in enumerate(hosts):
            failure: StepFailed | None = None
            async for event in self._switch_one(host, last=index == len(hosts) - 1):
                yield event
                if isinstance(event, StepFailed):
                    failure = event
            if failure is not None:
                await self._mark_bad(every_host, host, failure)
                await self._remove_restored(hosts)
                yield HostsChanged(self.hosts())
                yield StepDone("unlock", detail=f"{self.env.name} is free again")
                yield Finished(self._failed(failure))
                return
        await self._prune(hosts)
        versions = {r.version for r in self.runs.values()}
        if len(versions) == 1 and None not in versions:
            yield VersionKnown(str(versions.pop()))
        yield HostsChanged(self.hosts())
        yield StepDone("unlock", detail=f"{self.env.name} is free again")
        yield Finished(self._succeeded())

    def _needs_restore(self, host: Transport) -> bool:
        move = self.runs[host.target].move
        return move.backup is not None or move.adopt

    # --- preparing: nothing the service runs changes ---------------------------------------

    async def _check_plan(self, host: Transport) -> str:
        run = self.runs[host.target]
        view = await look(host, self.layout)
        if view.error is not None:
            raise StepError(StepFailed("hosts", host.target, 0.0, view.error))
        problem = _still_holds(run.move, view)
        if problem is not None:
            raise StepError(StepFailed("hosts", host.target, 0.0, problem))
        move = run.move
        now = (
            show_version(move.current_version)
            if move.current_version
            else (move.current or "a hand-made bin/")
        )
        return f"runs {now} → back to {self._target_of(run)}"

    def _target_of(self, run: HostRun) -> str:
        move = run.move
        version = f" ({show_version(run.version)})" if run.version else ""
        if move.release is not None:
            return f"release {move.release}{version}"
        return f"backup {move.backup}{version}"

    async def _restore(self, host: Transport) -> str:
        run = self.runs[host.target]
        notes = []
        if run.move.adopt:
            run.current = await releases.adopt(host, self.layout, self.clock())
            notes.append(f"the hand-made bin/ became release {run.current}")
        if run.move.backup is not None:
            release_id, version = await releases.restore_release(
                host, self.layout, run.move.backup, self.clock()
            )
            run.release = run.restored = release_id
            run.version = version or run.version
            what = f" ({show_version(run.version)})" if run.version else ""
            notes.append(f"{run.move.backup} unpacked into releases/{release_id}{what}")
        return "; ".join(notes)

    async def _check_files(self, host: Transport) -> str:
        run = self.runs[host.target]
        assert run.release is not None
        clocked = Clocked()
        (result,) = await releases.run_checked(host, [self.layout.check_files_command(run.release)])
        files = releases.parse_bin_listing(result.stdout)
        patterns = artifact_names(self.env)
        problems = missing_artifacts(patterns, files)
        if problems:
            held = ", ".join(sorted(files)[:10]) or "nothing"
            raise StepError(
                StepFailed(
                    "files",
                    host.target,
                    clocked.seconds,
                    f"releases/{run.release}/bin is not what the config's artifacts expect: "
                    f"{'; '.join(problems)} (it holds: {held})",
                )
            )
        found = sorted(n for n in files if any(fnmatch.fnmatchcase(n, p) for p in patterns))
        manifest = (
            "every file matches its MANIFEST"
            if "manifest checked" in result.stdout.splitlines()
            else "no MANIFEST to check against"
        )
        return f"bin/{', bin/'.join(found)} executable; {manifest}"

    # --- one host at a time: stop, switch, start, verify -----------------------------------

    async def _switch_one(self, host: Transport, *, last: bool) -> AsyncIterator[Event]:
        run = self.runs[host.target]
        assert run.release is not None
        target = host.target
        clocked = Clocked()
        yield StepStarted("stop", target, f"`{short(self.settings.stop)}`")
        problem = await self._command(host, self.settings.stop, "stop", clocked)
        if problem is not None:
            run.fate = "stop_failed"
            yield problem
            return
        yield StepDone("stop", target, clocked.seconds, f"`{short(self.settings.stop)}` done")
        clocked = Clocked()
        yield StepStarted("switch", target, f"current → releases/{run.release}")
        try:
            await releases.switch(host, self.layout, run.release, self.clock())
        except (TransportError, RemoteCommandFailed) as exc:
            run.fate = "switch_failed"
            # What ran before is still current (the switch is one rename): start it again.
            again = await self._command(host, self.settings.start, "switch", Clocked())
            after = (
                "; its release was started again"
                if again is None
                else f"; starting its release again failed too: {again.error}"
            )
            output = (
                self.activator.output(exc.result) if isinstance(exc, RemoteCommandFailed) else ""
            )
            yield StepFailed("switch", target, clocked.seconds, one_line(exc) + after, output)
            return
        yield StepDone("switch", target, clocked.seconds, f"current → releases/{run.release}")
        clocked = Clocked()
        yield StepStarted("start", target, f"`{short(self.settings.start)}`")
        problem = await self._command(host, self.settings.start, "start", clocked)
        if problem is not None:
            run.fate = "start_failed"
            yield problem
            return
        yield StepDone("start", target, clocked.seconds, f"`{short(self.settings.start)}` done")
        clocked = Clocked()
        timeout = human_duration(self.settings.verify_timeout.total_seconds())
        yield StepStarted("verify", target, f"{PASSES_NEEDED} passes in a row within {timeout}")
        verdict = await self.activator.verify(
            expect=run.version if last else None,
            accept=(run.version, run.move.current_version),
        )
        if not verdict.ok:
            run.fate = "unhealthy"
            yield StepFailed(
                "verify",
                target,
                clocked.seconds,
                f"failed its health check on host {target}: {verdict.reason} (no "
                f"{PASSES_NEEDED} passes in a row within verify_timeout {timeout})",
            )
            return
        run.version = run.version or verdict.version
        run.fate = "rolled_back"
        on = f" on {show_version(run.version)}" if run.version else ""
        yield StepDone(
            "verify", target, clocked.seconds, f"healthy{on}, {PASSES_NEEDED} checks in a row"
        )
        await self._record_verdicts(host, run)

    async def _command(
        self, host: Transport, text: str, step: str, clocked: Clocked
    ) -> StepFailed | None:
        """Run an operator's command (stop, start) on the host; a StepFailed if it failed."""
        try:
            result = await host.run(Shell(text))
        except TransportError as exc:
            return StepFailed(step, host.target, clocked.seconds, one_line(exc))
        if result.ok:
            return None
        return StepFailed(
            step,
            host.target,
            clocked.seconds,
            f"`{short(text)}` exited with status {result.exit_status}",
            self.activator.output(result),
        )

    # --- the release log ---------------------------------------------------------------------

    async def _log(self, host: Transport, event: dict[str, object]) -> None:
        """A verdict in the host's release log; the switch is what matters, so a failure to
        write it is logged, not fatal."""
        try:
            await releases.run_checked(host, [self.layout.log_command(event)])
        except (TransportError, RemoteCommandFailed) as exc:
            log.error("%s: release log not written (%s): %s", host.target, event["event"], exc)

    async def _record_verdicts(self, host: Transport, run: HostRun) -> None:
        assert run.release is not None
        await self._log(host, releases.log_event("good", run.release, self.clock()))
        if run.current is None:
            return
        if self.plan.verdict == "bad":
            reason = (
                f"rolled back by {self.requested_by} after deploy #{self.plan.undoing}'s "
                "health watch saw it fail"
            )
        else:
            reason = f"rolled back by {self.requested_by} to {self._target_of(run)}"
        event = releases.log_event(self.plan.verdict, run.current, self.clock(), reason=reason)
        await self._log(host, event)

    async def _mark_bad(
        self, every_host: Sequence[Transport], failed_on: Transport, failure: StepFailed
    ) -> None:
        """A target that did not come back healthy is bad: here, and wherever it is the same
        release (a kept release has one id on every host; a restored one is this host's)."""
        run = self.runs[failed_on.target]
        if run.fate not in ("start_failed", "unhealthy") or run.release is None:
            return
        event = releases.log_event(
            "bad",
            run.release,
            self.clock(),
            reason=f"failed after a rollback by {self.requested_by}: {failure.error}",
        )
        if run.restored is not None:
            await self._log(failed_on, event)
            return
        for host in every_host:
            with contextlib.suppress(TransportError, RemoteCommandFailed):
                state, _ = await releases.inspect(host, self.layout)
                if state.release(run.release) is not None:
                    await self._log(host, event)

    async def _remove_restored(self, hosts: Sequence[Transport]) -> None:
        """Releases unpacked for hosts this rollback never switched go again."""
        for host in hosts:
            run = self.runs[host.target]
            if run.restored is None or run.fate != "untouched":
                continue
            try:
                await releases.run_checked(
                    host, [self.layout.remove_releases_command([run.restored])]
                )
                run.restored = None
            except (TransportError, RemoteCommandFailed) as exc:
                log.warning("could not remove unused %s on %s: %s", run.restored, host.target, exc)

    async def _prune(self, hosts: Sequence[Transport]) -> None:
        """Keep keep_releases per host; the release left is kept, so this can be undone."""
        for host in hosts:
            run = self.runs[host.target]
            protect = [run.current] if run.current and self.plan.verdict != "bad" else []
            try:
                await releases.prune(host, self.layout, protect=protect)
            except (TransportError, RemoteCommandFailed) as exc:
                log.warning("old releases not pruned on %s: %s", host.target, exc)

    # --- the outcome ---------------------------------------------------------------------------

    def hosts(self) -> dict[str, dict[str, object]]:
        recorded: dict[str, dict[str, object]] = {}
        for target, run in self.runs.items():
            recorded[target] = {
                "from": run.current,
                "from_version": run.move.current_version,
                "to": run.release or run.move.target,
                "version": run.version,
                "backup": run.move.backup,
                "state": run.fate,
            }
        for target in self.plan.staying:
            recorded[target] = {
                "to": self.plan.target,
                "version": self.plan.version,
                "state": "already",
            }
        return recorded

    def _to_text(self) -> str:
        versions = {r.version for r in self.runs.values()}
        if len(versions) == 1 and None not in versions:
            return show_version(versions.pop())
        return self.plan.to_text

    def _outcome(self, state: str, summary: str, failure: StepFailed | None = None) -> Outcome:
        versions = {r.version for r in self.runs.values()}
        return Outcome(
            state=state,
            summary=summary,
            version=versions.pop() if len(versions) == 1 else None,
            failed_step=failure.step if failure else None,
            failed_host=(failure.host or None) if failure else None,
            error=failure.error if failure else None,
            output=failure.output if failure else "",
            seconds=self.clocked.seconds,
            hosts=self.hosts(),
        )

    def _succeeded(self) -> Outcome:
        summary = f"Rolled back {self.env.name} from {self.plan.from_text} to {self._to_text()}"
        if self.plan.kind == "backup":
            summary += f" (restored from {self.plan.target})"
        if self.plan.staying:
            summary += f"; {_hosts_text(list(self.plan.staying))} already ran it"
        return self._outcome("succeeded", summary + ".")

    def _untouched(self, failure: StepFailed) -> Outcome:
        where = f" on {failure.host}" if failure.host else ""
        summary = (
            f"Rollback of {self.env.name} to {self.plan.to_text} failed at "
            f"{TITLES[failure.step]}{where}: {failure.error}. Nothing the service runs was "
            "changed."
        )
        return self._outcome("failed", summary, failure)

    def _failed(self, failure: StepFailed) -> Outcome:
        summary = (
            f"Rollback of {self.env.name} to {self._to_text()} failed at "
            f"{TITLES[failure.step]} on {failure.host}: {failure.error}. It stopped there. "
            f"Now: {self.where()}."
        )
        return self._outcome("rollback_failed", summary, failure)

    def where(self) -> str:
        """Which hosts run which version now, host groups by what happened to them."""
        groups: dict[HostFate | Literal["already"], list[str]] = {}
        words: dict[HostFate | Literal["already"], tuple[str, str]] = {}
        for target, run in self.runs.items():
            before = (
                show_version(run.move.current_version)
                if run.move.current_version
                else (run.current or "what it ran")
            )
            after = show_version(run.version) if run.version else f"release {run.release}"
            words[run.fate] = {
                "rolled_back": (f"runs {after}", "rolled back and healthy"),
                "unhealthy": (f"runs {after}", "which failed its health check (marked bad)"),
                "start_failed": (f"is switched to {after}", "whose start failed (marked bad)"),
                "stop_failed": (f"still runs {before}", "its stop command failed"),
                "switch_failed": (f"still runs {before}", "the switch failed"),
                "untouched": (f"still runs {before}", "not reached"),
            }[run.fate]
            groups.setdefault(run.fate, []).append(target)
        if self.plan.staying:
            words["already"] = (f"already ran {self.plan.to_text}", "")
            groups["already"] = list(self.plan.staying)
        parts = []
        for fate, hosts in groups.items():
            verb, how = words[fate]
            if len(hosts) > 1:  # 'runs' → 'run', 'is' → 'are'
                verb = verb.replace("still runs", "still run").replace(
                    "is switched", "are switched"
                )
                verb = "run" + verb.removeprefix("runs") if verb.startswith("runs") else verb
            parts.append(f"{_hosts_text(hosts)} {verb}" + (f", {how}" if how else ""))
        return "; ".join(parts)


# --- /rollback backup ---------------------------------------------------------------------


@dataclass
class ManualBackup:
    """The runbook's Manual Backups: archive what runs now on every host, then prune to
    keep_backups, named and pruned exactly as /deploy's backups are."""

    env: Environment
    open_hosts: OpenHosts
    clock: Clock = utc_now
    taken: dict[str, Backup | None] = field(default_factory=dict)
    versions: set[str | None] = field(default_factory=set)
    removed: int = 0

    async def run(self) -> AsyncIterator[Event]:
        clocked = Clocked()
        layout = Layout.of(self.env)
        name = self.env.name
        yield StepDone("lock", detail=f"{name} is locked for this backup")
        taken_at = self.clock()  # one name on every host: one backup of the environment

        async def back_up(host: Transport) -> str:
            state, _ = await releases.inspect(host, layout)
            backup, removed = await releases.take_backup(host, layout, state, taken_at)
            self.taken[host.target] = backup
            if backup is None:
                return "nothing installed on this host: nothing to back up"
            current = state.current_release
            self.versions.add(current.version if current else None)
            self.removed += len(removed)
            what = (
                show_version(current.version)
                if current and current.version
                else ("the hand-made bin/" if state.needs_adoption else "the current release")
            )
            pruned = f"; {len(removed)} old removed (keep_backups {layout.keep_backups})"
            size = human_size(backup.size)
            return f"{backup.name} ({size}) of {what}{pruned if removed else ''}"

        async with self.open_hosts(self.env) as hosts:
            try:
                async for event in each_host("backup", hosts, back_up, output=_output):
                    yield event
            except StepError as failure:
                yield StepDone("unlock", detail=f"{name} is free again")
                event = failure.event
                summary = f"Backup of {name} failed on {event.host}: {event.error}"
                made = [t for t, b in self.taken.items() if b is not None]
                if made:
                    summary += f" ({_hosts_text(made)} did get it)"
                yield Finished(
                    Outcome(
                        "failed",
                        summary + ".",
                        failed_step="backup",
                        failed_host=event.host,
                        error=event.error,
                        output=event.output,
                        seconds=clocked.seconds,
                    )
                )
                return
        yield StepDone("unlock", detail=f"{name} is free again")
        made = [b for b in self.taken.values() if b is not None]
        if not made:
            yield Finished(
                Outcome(
                    "failed",
                    f"Nothing to back up on {name}: nothing is installed on its hosts yet.",
                    seconds=clocked.seconds,
                )
            )
            return
        version = self.versions.pop() if len(self.versions) == 1 else None
        if version is not None:
            yield VersionKnown(version)
        count = len(made)
        of = f" of {show_version(version)}" if version else ""
        summary = f"Backed up {name}{of}: {made[0].name} on {count} host{'s' if count != 1 else ''}"
        if self.removed:
            summary += f"; {self.removed} older archive(s) removed (keep_backups)"
        yield Finished(Outcome("succeeded", summary + ".", version, seconds=clocked.seconds))


def _output(result: CommandResult) -> str:
    return redact(tail(result.tail(40)))
