"""The deploy procedure itself, on this machine: real builds, real files, a real service.

Each test's environment is a demo EventMesh service restarted by the demo supervisor from the
installed release (tests/support/deploy_env.py), reached through the local transport; the SSH
tests (tests/test_deploy_ssh.py) run the same procedure against the loopback sshd.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Config
from bot.runbook.changes import releases
from bot.runbook.changes.deploy_request import DeployOptions, DeployRequest
from bot.runbook.changes.progress import StepDone, StepFailed, StepPlanned
from bot.transport import LocalTransport
from tests.support.deploy_env import (
    DemoTarget,
    demo_target,
    hand_made_install,
    tree_digest,
)
from tests.support.deploy_env import run_deploy as deploy


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


def test_deploys_install_releases_back_up_and_roll_a_bad_one_back(target: DemoTarget) -> None:
    config = config_for(target)

    events, first = deploy(config, "staging", "1.0.0")
    assert first.state == "succeeded", first.summary
    assert first.summary.startswith("Deployed v1.0.0 to staging (1 host)")
    assert healthz(target) == {"status": "healthy", "version": "1.0.0"}
    assert "--version 1.0.0" in target.current_files()["eventmesh-api"]
    current = (target.install_dir / "current").readlink()
    assert current.parent == Path("releases") and current.name.endswith("-1.0.0")
    assert (target.install_dir / "bin").readlink() == Path("current/bin")
    backup = next(e for e in events if isinstance(e, StepDone) and e.step == "backup")
    assert "nothing to back up yet" in backup.detail

    _, second = deploy(config, "staging", "1.0.1")
    assert second.state == "succeeded", second.summary
    assert healthz(target)["version"] == "1.0.1"
    (archive,) = target.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    with tarfile.open(archive) as backed_up:
        launcher = backed_up.extractfile("./bin/eventmesh-api")
        assert launcher is not None and b"--version 1.0.0" in launcher.read()

    events, bad = deploy(config, "staging", "1.0.2-broken")
    assert bad.state == "rolled_back", bad.summary
    assert bad.summary.startswith(
        "Rolled back to v1.0.1: v1.0.2-broken failed its health check on host local: "
        "healthz answered HTTP 503"
    )
    assert [e.step for e in events if isinstance(e, StepFailed)] == ["restart"]
    assert healthz(target) == {"status": "healthy", "version": "1.0.1"}
    assert "--version 1.0.1" in target.current_files()["eventmesh-api"]
    broken_id = next(e["release"] for e in log_events(target) if e.get("version") == "1.0.2-broken")
    verdicts = [e for e in log_events(target) if e["release"] == broken_id]
    assert verdicts[-1]["event"] == "bad"
    assert "failed its health check" in verdicts[-1]["reason"]
    assert (target.install_dir / "releases" / broken_id).is_dir()  # kept, marked bad
    assert len(list(target.backup_dir.glob("eventmesh-backup-staging-*"))) == 2  # keep_backups

    layout = releases.Layout.of(config.environments["staging"])
    state, _ = asyncio.run(releases.inspect(LocalTransport(), layout))
    previous = state.previous_good()
    assert previous is not None and previous.version == "1.0.0"


def test_a_redeploy_of_the_same_package_skips_the_upload(target: DemoTarget) -> None:
    config = config_for(target)
    deploy(config, "staging", "2.0.0")
    events, outcome = deploy(config, "staging", "2.0.0")
    assert outcome.state == "succeeded"
    upload = next(e for e in events if isinstance(e, StepDone) and e.step == "upload")
    assert "upload skipped" in upload.detail


def test_a_hand_made_bin_folder_is_adopted_as_the_release_to_go_back_to(
    target: DemoTarget,
) -> None:
    hand_made_install(target, "0.9.0")
    config = config_for(target)
    events, outcome = deploy(config, "staging", "1.0.0-broken")
    assert outcome.state == "rolled_back", outcome.summary
    install = next(e for e in events if isinstance(e, StepDone) and e.step == "install")
    assert "adopted the hand-made bin/" in install.detail
    assert (target.install_dir / "bin").is_symlink()
    assert "--version 0.9.0" in target.current_files()["eventmesh-api"]
    assert healthz(target) == {"status": "healthy", "version": "0.9.0"}
    assert [e["event"] for e in log_events(target)][:2] == ["adopted", "current"]


def test_old_releases_are_pruned_to_keep_releases_and_packages_with_them(
    target: DemoTarget,
) -> None:
    # Every deploy here succeeds, so verify_timeout is only a margin for a slow service start
    # (on a busy machine 4 s was not enough): generous, it costs nothing when the check passes.
    config = config_for(target, keep_releases=2, verify_timeout="2m")
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        assert deploy(config, "staging", version, DeployOptions(skip_tests=True))[1].ok
    kept = sorted(p.name for p in (target.install_dir / "releases").iterdir())
    assert [k.split("-", 1)[1] for k in kept] == ["1.0.1", "1.0.2"]
    packages = sorted(p.name for p in (target.install_dir / "packages").iterdir())
    assert packages == ["eventmesh-1.0.1.tar.gz", "eventmesh-1.0.2.tar.gz"]


def test_a_dry_run_shows_every_command_and_touches_nothing(target: DemoTarget) -> None:
    config = config_for(target)
    deploy(config, "staging", "1.0.0")
    before = tree_digest(target.install_dir, target.backup_dir, target.workdir)
    service = healthz(target)

    events, outcome = deploy(config, "staging", "2.0.0", DeployOptions(dry_run=True))

    assert outcome.state == "planned"
    assert tree_digest(target.install_dir, target.backup_dir, target.workdir) == before
    assert healthz(target) == service
    planned = {e.step: e for e in events if isinstance(e, StepPlanned)}
    assert list(planned) == [
        "lock", "checklist", "hosts", "version", "build", "test", "package", "backup",
        "upload", "install", "restart", "smoke", "record", "unlock",
    ]  # fmt: skip
    restart = "\n".join(planned["restart"].commands)
    assert "mv -T" in restart and target.supervise("restart") in restart
    assert f"{target.url}/healthz" in restart
    install = "\n".join(planned["install"].commands)
    assert "eventmesh-2.0.0.tar.gz" in install
    (upload,) = planned["upload"].commands
    package = target.install_dir / "packages" / "eventmesh-2.0.0.tar.gz"
    assert upload.endswith(f"upload to {package}")
    assert "sha256" in planned["upload"].note


def test_a_failure_before_the_restart_changes_nothing_and_shows_the_output(
    target: DemoTarget,
) -> None:
    config = config_for(target)
    deploy(config, "staging", "1.0.0")
    failing = config_for(target, test="echo 'token=hunter2secret'; echo 3 tests failed >&2; exit 1")
    events, outcome = deploy(failing, "staging", "1.0.1")
    assert outcome.state == "failed"
    assert outcome.failed_step == "test"
    assert "Nothing the service runs was changed" in outcome.summary
    assert "3 tests failed" in outcome.output
    assert "hunter2secret" not in outcome.output and "[redacted]" in outcome.output
    assert healthz(target)["version"] == "1.0.0"
    assert not [e for e in events if isinstance(e, StepDone) and e.step == "install"]


def test_cancel_stops_before_the_next_step_and_removes_the_unused_release(
    target: DemoTarget,
) -> None:
    config = config_for(target)
    deploy(config, "staging", "1.0.0")
    _, outcome = deploy(config, "staging", "1.0.1", cancel_before="install")
    assert outcome.state == "cancelled"
    assert outcome.summary.startswith("Cancelled before Restart and verify")
    assert outcome.cancelled_by == "U0APPROVER1"
    assert "nothing the service runs was changed" in outcome.summary
    assert healthz(target)["version"] == "1.0.0"
    releases_left = [p.name for p in (target.install_dir / "releases").iterdir()]
    assert not any(name.endswith("-1.0.1") for name in releases_left)


def test_an_empty_artifact_glob_is_an_error_naming_the_globs(target: DemoTarget) -> None:
    config = config_for(target, artifacts=["target/release/riptide-*", "nothing/*"])
    _, outcome = deploy(config, "staging", "1.0.0")
    assert outcome.failed_step == "package"
    assert "target/release/riptide-*, nothing/*" in (outcome.error or "")


def test_a_version_command_that_prints_garbage_stops_the_deploy(target: DemoTarget) -> None:
    config = config_for(target, version="echo '1.0; rm -rf /'")
    _, outcome = deploy(config, "staging", None)
    assert outcome.failed_step == "version"
    assert "is not a version" in (outcome.error or "")
    assert not target.install_dir.exists()


@pytest.mark.parametrize("version", ["1.0;rm -rf /", "$(id)", "../x", "x" * 65, ""])
def test_a_hostile_version_never_makes_a_request(target: DemoTarget, version: str) -> None:
    env = config_for(target).environments["staging"]
    with pytest.raises(ValueError):
        DeployRequest(env, version, DeployOptions(), "U0DEPLOY1")


def test_the_release_log_takes_any_text_as_data_not_shell(tmp_path: Path) -> None:
    layout = releases.Layout("staging", str(tmp_path / "install"), str(tmp_path / "backups"))
    marker = tmp_path / "pwned"
    reason = f"$(touch {marker}) `touch {marker}`; touch {marker} ' \""
    at = releases.parse_stamp("20260101T000000Z")
    event = releases.log_event("bad", "20260101T000000Z-1.0.0", at, reason=reason)
    asyncio.run(releases.append_log(LocalTransport(), layout, event))
    assert not marker.exists()
    (line,) = (tmp_path / "install" / "releases.log").read_text().splitlines()
    assert json.loads(line)["reason"] == reason
    with pytest.raises(ValueError):
        layout.release_dir("../../etc")


def test_packages_are_reproducible_and_their_manifest_checks_out(tmp_path: Path) -> None:
    from bot.runbook.changes.packaging import build_package

    artifact = tmp_path / "riptide-api"
    artifact.write_bytes(b"\x7fELF pretend binary")
    artifact.chmod(0o755)
    first = build_package("1.2.3", [artifact], tmp_path / "a")
    artifact.touch()  # a rebuild leaves a new mtime; the package must not change
    second = build_package("1.2.3", [artifact], tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    with tarfile.open(first.path) as package:
        names = package.getnames()
        manifest = package.extractfile("MANIFEST")
        assert manifest is not None
        assert manifest.read().decode().endswith("  bin/riptide-api\n")
        member = package.getmember("bin/riptide-api")
        assert member.mode == 0o755
    assert names == ["bin", "bin/riptide-api", "MANIFEST", "VERSION"]


def test_a_failed_smoke_test_fails_the_deploy_and_rolls_it_back(target: DemoTarget) -> None:
    config = config_for(target)
    deploy(config, "staging", "1.0.0", DeployOptions(skip_tests=True))
    smoke = 'echo "smoke against $EVENTMESH_BASE_URL for $EVENTMESH_VERSION"; exit 1'
    failing = config_for(target, smoke=smoke)
    _, outcome = deploy(failing, "staging", "1.0.1", DeployOptions(skip_tests=True))
    assert outcome.state == "rolled_back", outcome.summary
    assert outcome.failed_step == "smoke"
    assert f"smoke against {target.url} for 1.0.1" in outcome.output
    assert outcome.summary.startswith("Rolled back to v1.0.0: v1.0.1 failed at smoke tests")
    assert healthz(target)["version"] == "1.0.0"


def test_without_a_release_folder_to_go_back_to_the_backup_is_restored(
    target: DemoTarget,
) -> None:
    config = config_for(target)
    deploy(config, "staging", "1.0.0", DeployOptions(skip_tests=True))
    # The smoke test fails after someone deleted the old release's folder by hand: only this
    # deploy's backup can bring 1.0.0 back.
    releases_dir = target.install_dir / "releases"
    smoke = f"rm -rf {releases_dir}/*-1.0.0; exit 1"
    _, outcome = deploy(config_for(target, smoke=smoke), "staging", "1.0.1")
    assert outcome.state == "rolled_back", outcome.summary
    current = target.install_dir / "current"
    assert current.readlink().name.endswith("-restored")
    assert "--version 1.0.0" in target.current_files()["eventmesh-api"]
    assert healthz(target) == {"status": "healthy", "version": "1.0.0"}
    restored = [e for e in log_events(target) if e["event"] == "restored"]
    assert restored and restored[0]["note"].startswith("restored from eventmesh-backup-staging-")
