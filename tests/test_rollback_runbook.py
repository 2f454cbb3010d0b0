"""The rollback procedure itself: choosing what to go back to, and running it on this machine.

Choosing is a pure function of what the hosts have (built here as the release log and folders
would read); the runs are real: demo EventMesh services restarted by the demo supervisor from
the installed release, reached through the local transport (tests/test_rollback_e2e.py does
the same through the bot and the loopback sshd).
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Config
from bot.runbook.changes import releases
from bot.runbook.changes.backup import ManualBackup
from bot.runbook.changes.progress import Finished, StepDone, StepFailed, StepSkipped
from bot.runbook.changes.releases import Backup, HostState, Release
from bot.runbook.changes.rollback import missing_artifacts
from bot.runbook.changes.rollback_plan import (
    HostView,
    Move,
    Named,
    RollbackPlan,
    RollbackRefused,
    Survey,
    choose,
    parse_target,
)
from bot.transport import open_transports
from tests.conftest import free_port
from tests.support.deploy_env import (
    DemoTarget,
    backup_archive,
    demo_target,
    install_release,
    run_rollback,
    tree_digest,
)
from tests.support.sshd import Sshd, start_sshd

PYTHON = [sys.executable]

R1, R2, R3 = "20261101T100000Z-1.0.0", "20261102T100000Z-1.1.0", "20261103T100000Z-1.2.0"
B1 = "eventmesh-backup-staging-20261102T095959Z.tar.gz"
B2 = "eventmesh-backup-staging-20261103T095959Z.tar.gz"
HOSTS = ("deploy@a", "deploy@b")


def release(release_id: str, **fields: Any) -> Release:
    fields.setdefault("status", "good")
    fields.setdefault("was_current", True)
    return Release(release_id, release_id.split("-", 1)[1], None, **fields)


def host(
    target: str,
    current: str | None,
    kept: list[Release],
    backups: tuple[str, ...] = (),
    **state: Any,
) -> HostView:
    held = tuple(sorted(kept, key=lambda r: r.id, reverse=True))
    taken = tuple(Backup(b, datetime(2026, 11, 2, tzinfo=UTC), 1000) for b in backups)
    return HostView(target, HostState(target, True, current, "link", held, **state), taken)


def fleet(*views: HostView) -> Survey:
    return Survey("staging", views)


def on_both(current: str, kept: list[Release], backups: tuple[str, ...] = ()) -> Survey:
    return fleet(*(host(h, current, kept, backups) for h in HOSTS))


# --- what the operator may type --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (R1, Named("release", R1)),
        (B1, Named("backup", B1)),
        ("20261102T095959Z", Named("backup", B1)),
        ("eventmesh-backup-staging-eu-20261102T095959Z.tar.gz", None),  # another environment's
        ("eventmesh-backup-production-20261102T095959Z.tar.gz", None),
        ("../../etc/passwd", None),
        ("20261101T100000Z-1.0.0;rm -rf /", None),
        ("20261101T100000Z-$(id)", None),
        ("20261101T100000Z-`id`", None),
        ("20261101T100000Z-1.0/../../x", None),
        ("1.0.0", None),
        ("x" * 5000, None),
        ("20261101T100000Z-" + "1" * 65, None),
    ],
)
def test_ids_are_release_ids_or_this_environments_backups_and_nothing_else(
    text: str, expected: Named | None
) -> None:
    assert parse_target(text, "staging") == expected


def test_a_plan_survives_its_round_trip_and_refuses_a_tampered_one() -> None:
    plan = choose(on_both(R2, [release(R1), release(R2)]), None)
    assert isinstance(plan, RollbackPlan)
    assert RollbackPlan.from_dict(json.loads(json.dumps(plan.as_dict()))) == plan
    tampered = plan.as_dict()
    tampered["moves"] = [{**plan.moves[0].as_dict(), "release": "../../etc"}]
    with pytest.raises(ValueError):
        RollbackPlan.from_dict(tampered)


# --- choosing -------------------------------------------------------------------------------


def test_no_id_goes_to_the_newest_release_that_ran_and_is_neither_bad_nor_rolled_back() -> None:
    kept = [
        release(R1),
        release(R2, rolled_back=True, note="rolled back by U1"),
        release(R3),
        release("20261102T120000Z-1.1.1", status="bad", note="failed its health check"),
        release("20261102T130000Z-1.1.2", status="new", was_current=False),  # never ran
    ]
    plan = choose(on_both(R3, kept), None)
    assert isinstance(plan, RollbackPlan)
    assert (plan.kind, plan.target, plan.version) == ("release", R1, "1.0.0")
    assert [(m.host, m.current, m.release) for m in plan.moves] == [
        ("deploy@a", R3, R1),
        ("deploy@b", R3, R1),
    ]
    assert plan.title == "Roll back staging: v1.2.0 → v1.0.0"


def test_hosts_already_on_the_target_stay_as_they_are() -> None:
    # A rollback that stopped half-way: a is back on R1, b still runs R2.
    survey = fleet(
        host("deploy@a", R1, [release(R1), release(R2, rolled_back=True)]),
        host("deploy@b", R2, [release(R1), release(R2)]),
    )
    plan = choose(survey, None)
    assert isinstance(plan, RollbackPlan) and plan.target == R1
    assert [m.host for m in plan.moves] == ["deploy@b"] and plan.staying == ("deploy@a",)


def test_without_a_release_on_every_host_the_newest_backup_every_host_has_is_restored() -> None:
    survey = fleet(
        host("deploy@a", R2, [release(R1), release(R2)], (B1, B2)),
        host("deploy@b", R2, [release(R2)], (B1,)),  # R1 pruned here; B2 never reached it
    )
    plan = choose(survey, None)
    assert isinstance(plan, RollbackPlan)
    assert (plan.kind, plan.target) == ("backup", B1)
    assert all(m.backup == B1 and m.release is None for m in plan.moves)


def test_backups_that_failed_or_hold_what_runs_now_are_no_target() -> None:
    # B2 was restored once and failed; B1 was taken of R2, which both hosts run.
    survey = fleet(
        *(
            host(
                h,
                R2,
                [release(R2)],
                (B1, B2),
                bad_backups=frozenset({B2}),
                backup_of={B1: (R2, "1.1.0")},
            )
            for h in HOSTS
        )
    )
    refused = choose(survey, None)
    assert isinstance(refused, RollbackRefused)
    assert refused.reason.startswith("Nothing to roll back to on staging")
    assert "/rollback list staging" in refused.reason


def test_after_a_rollback_the_next_one_says_how_to_undo_it() -> None:
    kept = [release(R1), release(R2, rolled_back=True)]
    refused = choose(on_both(R1, kept), None)
    assert isinstance(refused, RollbackRefused)
    assert f"`/rollback staging {R2}` goes back to it" in refused.reason
    undo = choose(on_both(R1, kept), Named("release", R2))
    assert isinstance(undo, RollbackPlan) and undo.target == R2  # naming it is allowed


@pytest.mark.parametrize(
    ("choice", "words"),
    [
        (Named("release", "20261105T100000Z-9.9.9"), "There is no release 20261105T100000Z-9.9.9"),
        (Named("release", R3), "Release 20261103T100000Z-1.2.0 is not on deploy@b"),
        (Named("release", "20261102T120000Z-1.1.1"), "was marked bad: healthz answered HTTP 503"),
        (Named("release", "20261102T130000Z-1.1.2"), "never ran on staging"),
        (Named("release", R2), "staging already runs release 20261102T100000Z-1.1.0"),
        (Named("backup", B2), f"Backup {B2} is not on deploy@b"),
        (Named("backup", "eventmesh-backup-staging-20261109T000000Z.tar.gz"), "There is no backup"),
    ],
)
def test_a_named_target_that_is_not_there_or_not_fit_is_refused(choice: Named, words: str) -> None:
    bad = release("20261102T120000Z-1.1.1", status="bad", note="healthz answered HTTP 503")
    never = release("20261102T130000Z-1.1.2", status="new", was_current=False)
    survey = fleet(
        host("deploy@a", R2, [release(R1), release(R2), release(R3), bad, never], (B1, B2)),
        host("deploy@b", R2, [release(R1), release(R2), bad, never], (B1,)),
    )
    refused = choose(survey, choice)
    assert isinstance(refused, RollbackRefused), refused
    assert words in refused.reason


def test_nothing_installed_or_a_host_that_cannot_be_read_is_refused() -> None:
    empty = fleet(HostView("deploy@a", HostState("deploy@a", False, None, "none", ())))
    refused = choose(empty, None)
    assert (
        isinstance(refused, RollbackRefused)
        and "Nothing is installed on staging yet" in refused.reason
    )
    unreadable = fleet(
        host("deploy@a", R2, [release(R1), release(R2)]),
        HostView("deploy@b", error="deploy@b: connection refused"),
    )
    refused = choose(unreadable, None)
    assert isinstance(refused, RollbackRefused)
    assert (
        refused.reason.startswith("Cannot read deploy@b")
        and "Nothing was changed" in refused.reason
    )


def test_the_config_artifacts_are_looked_for_in_bin() -> None:
    files = {"riptide-api": True, "riptide-worker": False, "README": False}
    # The deploy packages whatever the globs match, executable or not: so does the check.
    assert missing_artifacts(["riptide-*"], files) == []
    assert missing_artifacts(["*"], {"eventmesh-api": True, "VERSION": False}) == []
    assert missing_artifacts(["eventmesh-api"], files) == ["no eventmesh-api"]
    assert missing_artifacts(["riptide-api"], files) == []


def test_the_release_log_remembers_rollbacks_and_bad_backups() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    lines = [
        json.dumps({"event": "installed", "release": R1, "version": "1.0.0", "at": at}),
        json.dumps({"event": "current", "release": R1, "at": at}),
        json.dumps({"event": "backed_up", "release": R1, "backup": B1, "at": at}),
        json.dumps({"event": "rolled_back", "release": R1, "reason": "by U1", "at": at}),
        json.dumps({"event": "restored", "release": "20261102T000000Z-restored", "backup": B2}),
        json.dumps({"event": "bad", "release": "20261102T000000Z-restored", "reason": "503"}),
        "{not json",
    ]
    known = releases.fold_log(lines)
    assert known[R1].rolled_back and not known[R1].usable and known[R1].backed_up_as == (B1,)
    assert known["20261102T000000Z-restored"].backup == B2
    good = json.dumps({"event": "good", "release": R1, "at": at})
    assert releases.fold_log([*lines, good])[R1].usable  # proved good again: a target again


# --- real runs on this machine --------------------------------------------------------------


def config_for(target: DemoTarget, **overrides: Any) -> Config:
    return Config.model_validate({"environments": {target.name: target.environment(**overrides)}})


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def log_events(target: DemoTarget) -> list[dict[str, Any]]:
    text = (target.install_dir / "releases.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "staging")
    yield target
    target.stop()


def test_back_to_the_previous_release_keeping_the_one_left(target: DemoTarget) -> None:
    config = config_for(target)
    install_release(config, "staging", "1.0.0")
    left = install_release(config, "staging", "1.0.1")

    plan, events, outcome = run_rollback(config, "staging")
    assert isinstance(plan, RollbackPlan) and outcome is not None
    assert outcome.state == "succeeded", outcome.summary
    assert outcome.summary == "Rolled back staging from v1.0.1 to v1.0.0."
    assert healthz(target) == {"status": "healthy", "version": "1.0.0"}
    assert "--version 1.0.0" in target.current_files()["eventmesh-api"]
    assert (target.install_dir / "releases" / left).is_dir()  # kept: it can be undone
    done = [e.step for e in events if isinstance(e, StepDone)]
    assert done == ["lock", "hosts", "files", "stop", "switch", "start", "verify", "unlock"]
    skipped = next(e for e in events if isinstance(e, StepSkipped))
    assert skipped.step == "restore" and "the switch is instant" in skipped.reason
    files = next(e for e in events if isinstance(e, StepDone) and e.step == "files")
    assert files.detail == "bin/eventmesh-api executable; every file matches its MANIFEST"
    last = log_events(target)[-2:]
    assert [(e["event"], e["release"]) for e in last] == [
        ("good", plan.target),
        ("rolled_back", left),
    ]

    # The next rollback does not bounce back to the release just left; it says how to.
    again, _, _ = run_rollback(config, "staging")
    assert isinstance(again, RollbackRefused)
    assert f"`/rollback staging {left}` goes back to it" in again.reason


def test_a_manual_backup_and_an_archive_without_the_artifacts(target: DemoTarget) -> None:
    config = config_for(target)
    current = install_release(config, "staging", "1.0.0")

    # The runbook's Manual Backups: named and logged like /deploy's.
    async def back_up() -> list[Any]:
        procedure = ManualBackup(
            config.environments["staging"], lambda env: open_transports(env, config.ssh)
        )
        return [event async for event in procedure.run()]

    events = asyncio.run(back_up())
    outcome = events[-1].outcome if isinstance(events[-1], Finished) else None
    assert outcome is not None and outcome.state == "succeeded", events
    (taken,) = target.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    assert outcome.summary == f"Backed up staging of v1.0.0: {taken.name} on 1 host."
    assert log_events(target)[-1] == {
        "event": "backed_up",
        "release": current,
        "backup": taken.name,
        "at": log_events(target)[-1]["at"],
    }

    # An archive without the config's artifact: found before anything stops.
    now = datetime.now(UTC)
    wrong = backup_archive(target, "2.0.0", now - timedelta(days=2))
    wrong_tree = wrong.parent / "wrong"
    with tarfile.open(wrong) as archive:
        archive.extractall(wrong_tree, filter="data")
    (wrong_tree / "bin" / "eventmesh-api").rename(wrong_tree / "bin" / "other-api")
    (wrong_tree / "MANIFEST").unlink()
    with tarfile.open(wrong, "w:gz") as archive:
        archive.add(wrong_tree, arcname=".")
    kept = target.install_dir / "releases"
    before = (sorted(kept.iterdir()), tree_digest(kept / current, target.install_dir / "current"))
    _, events, outcome = run_rollback(config, "staging", Named("backup", wrong.name))
    assert outcome is not None and outcome.state == "failed", outcome
    failed = next(e for e in events if isinstance(e, StepFailed))
    assert failed.step == "files" and "no eventmesh-api" in failed.error
    assert "(it holds: other-api)" in failed.error
    assert outcome.summary.endswith("Nothing the service runs was changed.")
    after = (sorted(kept.iterdir()), tree_digest(kept / current, target.install_dir / "current"))
    assert after == before  # the unpacked archive was removed again
    assert (target.install_dir / "current").readlink().name == current


def test_a_plan_names_its_target_and_versions() -> None:
    move = Move("deploy@a", R2, "1.1.0", release=R1, version="1.0.0")
    plan = RollbackPlan("staging", "release", R1, "1.0.0", (move,))
    assert plan.target_line() == f"release {R1} (v1.0.0)"
    assert plan.title == "Roll back staging: v1.1.0 → v1.0.0"


# --- several hosts, over SSH ----------------------------------------------------------------


@pytest.fixture
def three_hosts(tmp_path: Path, sshd: Sshd) -> Iterator[list[tuple[Sshd, Path]]]:
    """Three sshds for one client key, each running commands in a folder of its own: three
    hosts whose relative install_dir, backups and service are their own."""
    made = []
    for name in ("a", "b", "c"):
        home = tmp_path / f"host-{name}"
        home.mkdir()
        force = f'ForceCommand cd {home} && exec sh -c "$SSH_ORIGINAL_COMMAND"'
        made.append(
            (
                start_sshd(
                    tmp_path / f"sshd-{name}", client_key=sshd.client_key, extra_config=[force]
                ),
                home,
            )
        )
    yield made
    for server, home in made:
        subprocess.run(
            [*PYTHON, "-m", "bot.demo.supervise", "stop", "--state", str(home / "service.json")],
            capture_output=True,
            check=False,
        )
        server.stop()


def test_hosts_go_back_one_at_a_time_and_a_failure_stops_there(
    tmp_path: Path, sshd: Sshd, three_hosts: list[tuple[Sshd, Path]]
) -> None:
    port = free_port()
    supervise = f"{shlex.join(PYTHON)} -m bot.demo.supervise"
    work = tmp_path / "work"
    work.mkdir()
    known = tmp_path / "known_hosts"
    known.write_text(
        "".join(
            f"{server.known_hosts_name} {line}\n"
            for server, _ in three_hosts
            for line in server.host_keys.values()
        )
    )
    env = {
        "base_url": f"http://127.0.0.1:{port}",  # host a's service: the one behind the URL
        "hosts": [str(server.host) for server, _ in three_hosts],
        "workdir": str(work),
        "build": f"{shlex.join(PYTHON)} -m bot.demo.release build --out build",
        "test": "true",
        "version": "echo 1.0.0",
        "artifacts": ["build/eventmesh-api"],
        "install_dir": "install",  # relative: in each host's own folder
        "backup_dir": "backups",
        "start": f"{supervise} start --install-dir install --state service.json --port {port}",
        # b's stop fails: a marker file only b's folder has.
        "stop": f"test ! -e fail-stop && {supervise} stop --state service.json",
        "restart": f"{supervise} restart --install-dir install --state service.json --port {port}",
        "verify_interval": "1s",
        "verify_timeout": "10s",
    }
    config = Config.model_validate(
        {
            "ssh": {"key_file": str(sshd.client_key), "known_hosts": str(known)},
            "environments": {"staging": env},
        }
    )
    install_release(config, "staging", "1.0.0")
    homes = [home for _, home in three_hosts]
    (homes[1] / "fail-stop").touch()
    old = DemoTarget("staging", tmp_path / "archive", port)
    taken = datetime.now(UTC) - timedelta(hours=1)
    archive = backup_archive(old, "0.9.0", taken)
    for home in homes:  # the same backup on every host, as a /deploy leaves it
        (home / "backups").mkdir(exist_ok=True)
        shutil.copy(archive, home / "backups" / archive.name)

    plan, events, outcome = run_rollback(config, "staging", Named("backup", archive.name))
    assert isinstance(plan, RollbackPlan) and outcome is not None
    a, b, c = (str(server.host) for server, _ in three_hosts)
    assert outcome.state == "rollback_failed", outcome.summary
    assert outcome.summary.startswith(
        f"Rollback of staging to v0.9.0 failed at Stop the service on {b}: `test ! -e fail-stop"
    )
    assert outcome.summary.endswith(
        f"It stopped there. Now: {a} runs v0.9.0, rolled back and healthy; {b} still runs "
        f"v1.0.0, its stop command failed; {c} still runs v1.0.0, not reached."
    )
    # One host at a time, in order, and nothing after the failure.
    order = [(e.step, e.host) for e in events if isinstance(e, StepDone | StepFailed)]
    one_at_a_time = [x for x in order if x[0] in ("stop", "switch", "start", "verify")]
    assert one_at_a_time == [("stop", a), ("switch", a), ("start", a), ("verify", a), ("stop", b)]
    assert {h for s, h in order if s == "files"} == {a, b, c}  # checked everywhere first
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["version"] == "0.9.0"
    currents = [(home / "install" / "current").readlink().name for home in homes]
    assert currents[0].endswith("-restored")
    assert [c.endswith("-1.0.0") for c in currents[1:]] == [True, True]
    for home in homes[1:]:  # unpacked for nothing: removed again
        assert not any(p.name.endswith("-restored") for p in (home / "install/releases").iterdir())


def test_manual_backups_never_prune_the_one_taken_before_the_current_release(
    target: DemoTarget,
) -> None:
    config = config_for(target, keep_backups=2)
    install_release(config, "staging", "1.0.0")
    now = datetime.now(UTC)
    before = backup_archive(target, "0.9.0", now - timedelta(days=1))  # what ran before 1.0.0
    older = backup_archive(target, "0.8.0", now - timedelta(days=2))
    env = config.environments["staging"]

    async def back_up(at: datetime) -> None:
        procedure = ManualBackup(env, lambda e: open_transports(e, config.ssh), clock=lambda: at)
        events = [event async for event in procedure.run()]
        assert isinstance(events[-1], Finished) and events[-1].outcome.state == "succeeded"

    for n in range(1, 4):  # keep_backups times, and once more
        asyncio.run(back_up(now + timedelta(minutes=n)))
    kept = sorted(p.name for p in target.backup_dir.glob("eventmesh-backup-staging-*.tar.gz"))
    assert before.name in kept  # the one a rollback to a backup needs
    assert older.name not in kept
    assert len(kept) == 3  # keep_backups newest, and the one before the current release


def test_a_data_file_the_deploy_shipped_in_bin_does_not_refuse_the_rollback(
    target: DemoTarget,
) -> None:
    """The artifacts glob matches a VERSION file (mode 644) as well as the service: the deploy
    installed both, and the rollback to what it installed goes ahead."""
    config = config_for(target)
    install_release(config, "staging", "1.0.0")
    install_release(config, "staging", "1.0.1")
    for release in (target.install_dir / "releases").iterdir():
        (release / "bin" / "VERSION").write_text(release.name + "\n")
        (release / "bin" / "VERSION").chmod(0o644)
    shipped = target.environment()["artifacts"]
    folder = posixpath.dirname(shipped[0])
    config = config_for(target, artifacts=[f"{folder}/*"])
    _, events, outcome = run_rollback(config, "staging")
    assert outcome is not None and outcome.state == "succeeded", events
    files = next(e for e in events if isinstance(e, StepDone) and e.step == "files")
    assert "bin/VERSION" in files.detail and "present, as the deploy left it" in files.detail
