"""The deploy procedure over SSH, against a real OpenSSH sshd on loopback.

The "host" is this machine logged into through sshd (tests/support/sshd.py), so its files are
checked directly; the service is a demo EventMesh service that the config's `restart` command,
run over SSH, starts from the installed release.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Config
from bot.runbook.changes.deploy_request import DeployOptions
from bot.runbook.changes.progress import StepDone, StepFailed
from tests.support.deploy_env import DemoTarget, demo_target, run_deploy, tree_digest
from tests.support.sshd import Sshd, free_port, keygen


def ssh_section(sshd: Sshd, known_hosts: Path | None = None, **overrides: str) -> dict[str, str]:
    return {
        "key_file": str(sshd.client_key),
        "known_hosts": str(known_hosts or sshd.known_hosts()),
        "connect_timeout": "5s",
        "command_timeout": "60s",
        **overrides,
    }


def ssh_config(
    sshd: Sshd,
    target: DemoTarget,
    *,
    hosts: list[str] | None = None,
    ssh: dict[str, str] | None = None,
    **overrides: Any,
) -> Config:
    env = target.environment(**overrides)
    del env["transport"]
    env["hosts"] = hosts or [str(sshd.host)]
    return Config.model_validate(
        {"ssh": ssh or ssh_section(sshd), "environments": {"staging": env}}
    )


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "staging")
    yield target
    target.stop()


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def test_staging_over_ssh_installs_backs_up_restarts_and_rolls_back(
    sshd: Sshd, target: DemoTarget
) -> None:
    config = ssh_config(sshd, target)
    host = str(sshd.host)

    _, first = run_deploy(config, "staging", "1.0.0")
    assert first.state == "succeeded", first.summary
    events, second = run_deploy(config, "staging", "1.0.1")
    assert second.state == "succeeded", second.summary
    assert healthz(target) == {"status": "healthy", "version": "1.0.1"}
    assert "--version 1.0.1" in target.current_files()["eventmesh-api"]
    done = {e.step: e for e in events if isinstance(e, StepDone)}
    assert done["upload"].host == host and "sha256 verified" in done["upload"].detail
    (backup,) = target.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    assert backup.name in done["backup"].detail

    events, again = run_deploy(config, "staging", "1.0.1")
    assert again.state == "succeeded"
    upload = next(e for e in events if isinstance(e, StepDone) and e.step == "upload")
    assert "upload skipped" in upload.detail

    _, bad = run_deploy(config, "staging", "1.0.2-broken", DeployOptions(skip_tests=True))
    assert bad.state == "rolled_back", bad.summary
    assert bad.summary.startswith(
        f"Rolled back to v1.0.1: v1.0.2-broken failed its health check on host {host}: "
        "healthz answered HTTP 503"
    )
    assert healthz(target) == {"status": "healthy", "version": "1.0.1"}
    assert "--version 1.0.1" in target.current_files()["eventmesh-api"]


def test_a_dry_run_over_ssh_leaves_the_host_byte_for_byte_unchanged(
    sshd: Sshd, target: DemoTarget
) -> None:
    config = ssh_config(sshd, target)
    run_deploy(config, "staging", "1.0.0", DeployOptions(skip_tests=True))
    before = tree_digest(target.install_dir, target.backup_dir)
    logins = sshd.log_text().count("Accepted publickey")

    _, outcome = run_deploy(config, "staging", "2.0.0", DeployOptions(dry_run=True))

    assert outcome.state == "planned"
    assert tree_digest(target.install_dir, target.backup_dir) == before
    assert sshd.log_text().count("Accepted publickey") == logins  # not even a login
    assert healthz(target)["version"] == "1.0.0"


def test_a_changed_host_key_is_refused_before_anything_changes(
    sshd: Sshd, target: DemoTarget, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger", "ed25519")
    known = sshd.known_hosts(f"{sshd.known_hosts_name} {stranger}", types=())
    config = ssh_config(sshd, target, ssh=ssh_section(sshd, known))
    events, outcome = run_deploy(config, "staging", "1.0.0")
    (failure,) = [e for e in events if isinstance(e, StepFailed)]
    assert failure.step == "hosts"
    assert failure.error.startswith(f"{sshd.host}: HOST KEY CHANGED")
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known}" in failure.error
    assert "\n" not in failure.error
    assert outcome.state == "failed"
    assert outcome.summary.startswith(
        "Deploy of v1.0.0 to staging did not start: staging's host cannot be reached"
    )
    assert outcome.summary.endswith("Nothing was changed.")
    assert not target.install_dir.exists()


def test_a_refused_connection_is_one_clear_line(sshd: Sshd, target: DemoTarget) -> None:
    port = free_port()
    config = ssh_config(sshd, target, hosts=[f"deploy@127.0.0.1:{port}"])
    events, outcome = run_deploy(config, "staging", "1.0.0")
    (failure,) = [e for e in events if isinstance(e, StepFailed)]
    assert failure.error == (
        f"deploy@127.0.0.1:{port}: connection refused at 127.0.0.1:{port} "
        "(is sshd running on that port?)"
    )
    assert outcome.failed_step == "hosts"


def test_a_command_past_its_timeout_is_one_clear_line_and_stopped_on_the_host(
    sshd: Sshd, target: DemoTarget
) -> None:
    config = ssh_config(
        sshd,
        target,
        ssh=ssh_section(sshd, command_timeout="2s"),
        restart="sleep 30",
        auto_rollback=False,
    )
    events, outcome = run_deploy(config, "staging", "1.0.0", DeployOptions(skip_tests=True))
    (failure,) = [e for e in events if isinstance(e, StepFailed)]
    assert failure.step == "restart"
    assert (
        failure.error == f"{sshd.host}: `sleep 30` ran longer than 2s and was stopped on the host"
    )
    assert outcome.state == "failed"
    assert "auto_rollback is off" in outcome.summary
    assert sshd.run_on_host("pgrep -f '^sleep 30$' || true").stdout.strip() == ""
