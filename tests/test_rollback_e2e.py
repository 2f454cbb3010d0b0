"""/rollback end to end: signed requests to the real bot, replies in the Slack fake, real hosts.

staging and production are reached over the real loopback sshd; each is a demo EventMesh
service that the config's `start` runs from the installed release, so /healthz reports what is
really installed (tests/support/deploy_env.py). One bot serves the whole module; the tests run
in order and staging carries over from one to the next, as an environment does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Config
from bot.store import Deployment, Store
from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEST_LIMITS,
    BotProcess,
    bot_database_url,
    start_bot,
    stop_process,
)
from tests.support.approvals import (
    APPROVALS,
    APPROVER,
    BOTH,
    DEPLOYER,
    OTHER_APPROVER,
    OTHER_DEPLOYER,
    refuse_then_approve,
    request_for,
)
from tests.support.conversation import Conversation, Reply, text_of
from tests.support.deploy_env import (
    DemoTarget,
    backup_archive,
    demo_target,
    install_release,
    tree_digest,
)
from tests.support.deploy_reports import finished, run_of
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd

ALERTS, INCIDENTS = "C0ALERTS", "C0INCIDENTS"


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DemoTarget]]:
    root = tmp_path_factory.mktemp("rollback-targets")
    made = {name: demo_target(root, name) for name in ("staging", "production", "dev", "qa")}
    yield made
    for target in made.values():
        target.stop()


@pytest.fixture(scope="module")
def gate(targets: dict[str, DemoTarget]) -> Path:
    """A fifo dev's build waits on: a deploy to dev holds the lock until the test lets go."""
    path = targets["dev"].root / "build-gate"
    os.mkfifo(path)
    return path


def fast(target: DemoTarget, **overrides: Any) -> dict[str, Any]:
    """Second-scale verification and follow-up checks."""
    return target.environment(
        verify_timeout="8s", followup_every="1s", followup_for="2s", **overrides
    )


def over_ssh(env: dict[str, Any], sshd: Sshd) -> dict[str, Any]:
    del env["transport"]
    env["hosts"] = [str(sshd.host)]
    return env


@pytest.fixture(scope="module")
def bot(
    tmp_path_factory: pytest.TempPathFactory,
    slack: SlackFake,
    targets: dict[str, DemoTarget],
    gate: Path,
    sshd: Sshd,
) -> Iterator[BotProcess]:
    tmp = tmp_path_factory.mktemp("rollback-bot")
    dev = fast(targets["dev"])
    dev["build"] = f"cat {gate} > /dev/null && {dev['build']}"
    config = {
        "ssh": {
            "key_file": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts()),
            "connect_timeout": "5s",
            "command_timeout": "60s",
        },
        "slack": {
            "alerts_channel": ALERTS,
            "approvals_channel": APPROVALS,
            "incidents_channel": INCIDENTS,
        },
        "access": {
            "deployers": [DEPLOYER, OTHER_DEPLOYER, BOTH],
            "approvers": [APPROVER, OTHER_APPROVER, BOTH],
        },
        "escalation": {"levels": [{"name": "On-call DevOps Engineer", "users": ["U0ONCALL"]}]},
        "alerts": {"scheduled_checks": False},  # this test is about commands, not alerts
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "environments": {
            "staging": over_ssh(fast(targets["staging"]), sshd),
            "production": over_ssh(fast(targets["production"], requires_approval=True), sshd),
            "dev": dev,
            "qa": fast(targets["qa"]),
        },
    }
    path = tmp / "eventmesh.yml"
    path.write_text(json.dumps(config, indent=2))
    database_url = bot_database_url(tmp)
    process, url, log = start_bot(
        tmp,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(path),
        EVENTMESH_DATABASE_URL=database_url,
    )
    running = BotProcess(url, process, log, database_url, slack)
    yield running
    running.http.close()
    code = stop_process(process)
    assert code == 0, f"the bot exited with {code}:\n{log.read_text()}"


def say(chat: Conversation, line: str, user: str = DEPLOYER) -> Reply:
    return chat.as_(user).say(line)


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def current(target: DemoTarget) -> str:
    return (target.install_dir / "current").readlink().name


def log_events(target: DemoTarget) -> list[dict[str, Any]]:
    text = (target.install_dir / "releases.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def latest_rollback(chat: Conversation, env: str) -> Deployment:
    store = Store(chat.bot.database_url)
    try:
        return store.deployments(env, kind="rollback", limit=1)[0]
    finally:
        store.close()


def test_deploy_twice_then_roll_back_staging(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    assert "Deployed v1.0.0" in run_of(say(chat, "/deploy staging 1.0.0")).when(finished)["text"]
    first = current(staging)
    second = run_of(say(chat, "/deploy staging 2.0.0 --skip-tests")).when(finished)
    assert "Deployed v2.0.0" in second["text"]
    left = current(staging)

    # What there is to go back to: open to everyone, answered privately.
    listed = say(chat, "/rollback list staging", user="U0NOBODY")
    listing = listed.private("Rollback targets · staging").text
    assert f"`{left}` · *v2.0.0*" in listing and ":large_green_circle: *current*" in listing
    chosen = next(line for line in listing.splitlines() if line.startswith(f"`{first}`"))
    assert chosen.startswith(f"`{first}` · *v1.0.0* · installed")
    assert chosen.endswith("← `/rollback staging` goes here")
    (backup,) = staging.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    assert f"`{backup.name}` · of *v1.0.0*" in listing
    assert f"`/rollback staging` now goes back to release {first} (v1.0.0)" in listing

    asked = say(chat, "/rollback staging")
    run = run_of(asked)
    final = run.when(finished)
    assert final["text"] == "Rolled back staging from v2.0.0 to v1.0.0.", text_of(final)
    assert block_kit_errors(final["blocks"]) == []
    text = text_of(final)
    assert "Roll back staging: v2.0.0 → v1.0.0" in text
    for line in ("Reach the hosts", "Check the files", "Stop the service", "Switch current"):
        assert f":white_check_mark: *{line}*" in text, line
    assert ":heavy_minus_sign: *Restore the backup* — release" in text
    assert ":white_check_mark: *Health checks*" in text and "healthy on v1.0.0" in text

    # v1's files are back, the service reports v1 and is healthy, v2's release is kept.
    assert healthz(staging) == {"status": "healthy", "version": "1.0.0"}
    assert current(staging) == first
    assert "--version 1.0.0" in staging.current_files()["eventmesh-api"]
    assert (staging.install_dir / "releases" / left).is_dir()

    # Follow-up checks in the thread, then the checklist and the alerts summary say how it went.
    run.thread_line("Follow-up checks of staging: one every 1s")
    run.thread_line("Follow-up check 1 of 2")
    done = run.thread_line("Follow-up checks done")
    assert "staging stayed healthy on v1.0.0 (2 checks, all passed)" in done.text
    rollback = latest_rollback(chat, "staging")
    summary = asked.message(f"rollback #{rollback.id} ·", in_=ALERTS)
    assert "Rollback of staging: done" in summary.text
    summary.when("Follow-up checks done")
    checklist = text_of(run.when(":white_check_mark: *Follow-up checks*"))
    assert ":white_check_mark: *Summary in the alerts channel* — posted" in checklist
    assert ":white_check_mark: *Incident record* — rollback #" in checklist
    assert "no incident opened: the rollback succeeded" in checklist
    assert (rollback.state, rollback.version, rollback.requested_by) == (
        "succeeded",
        "1.0.0",
        DEPLOYER,
    )


def test_a_rollback_is_undone_and_an_older_backup_restored_exactly(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    releases = sorted(p.name for p in (staging.install_dir / "releases").iterdir())
    (left,) = [r for r in releases if r.endswith("-2.0.0")]
    undone = run_of(say(chat, f"/rollback staging {left}")).when(finished)
    assert undone["text"] == "Rolled back staging from v1.0.0 to v2.0.0.", text_of(undone)
    assert healthz(staging)["version"] == "2.0.0"

    (older,) = staging.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")  # of v1.0.0
    backed = run_of(say(chat, "/rollback backup staging")).when(finished)
    assert backed["text"].startswith("Backed up staging of v2.0.0: eventmesh-backup-staging-")
    newer = {p.name for p in staging.backup_dir.glob("*.tar.gz")} - {older.name}
    assert len(newer) == 1 and newer.pop() in backed["text"]

    stamp = older.name.removeprefix("eventmesh-backup-staging-").removesuffix(".tar.gz")
    final = run_of(say(chat, f"/rollback staging {stamp}")).when(finished)
    assert final["text"] == (
        f"Rolled back staging from v2.0.0 to v1.0.0 (restored from {older.name})."
    ), text_of(final)
    assert ":white_check_mark: *Restore the backup*" in text_of(final)
    assert f"{older.name} unpacked into releases/" in text_of(final)
    assert healthz(staging) == {"status": "healthy", "version": "1.0.0"}
    restored = current(staging)
    assert restored.endswith("-restored")
    assert "--version 1.0.0" in staging.current_files()["eventmesh-api"]
    event = next(e for e in log_events(staging) if e["release"] == restored)
    assert (event["event"], event["backup"]) == ("restored", older.name)


def test_a_target_that_stays_unhealthy_fails_opens_an_incident_and_claims_nothing(
    chat: Conversation, targets: dict[str, DemoTarget], sshd: Sshd
) -> None:
    staging = targets["staging"]
    before = current(staging)
    broken = backup_archive(staging, "4.0.0-broken", datetime.now(UTC))
    asked = say(chat, f"/rollback staging {broken.name}")
    run = run_of(asked)
    final = run.when(finished)
    text = text_of(final)
    assert final["text"].startswith(
        f"Rollback of staging to v4.0.0-broken failed at Health checks on {sshd.host}: failed "
        f"its health check on host {sshd.host}: healthz answered HTTP 503"
    ), text
    assert "Rolled back" not in text and "succeeded" not in text
    assert f"Now: {sshd.host} runs v4.0.0-broken, which failed its health check" in text
    assert ":x: *Health checks*" in text
    run.thread_line("Health checks* failed")

    rollback = latest_rollback(chat, "staging")
    assert rollback.state == "rollback_failed"
    incident = asked.message(f"Rollback #{rollback.id}: Rollback of staging", in_=INCIDENTS)
    assert "SEV 2" in incident.text
    summary = asked.message(f"rollback #{rollback.id} ·", in_=ALERTS)
    assert "Rollback of staging: FAILED" in summary.text and "INC-" in summary.text
    checklist = text_of(run.when("*Incident record* — INC-"))
    assert "opened (SEV 2): the escalation path is being paged" in checklist
    assert ":heavy_minus_sign: *Follow-up checks* — the rollback did not complete" in checklist
    bad = [e for e in log_events(staging) if e["event"] == "bad"]
    assert bad[-1]["release"] == current(staging) != before

    # The next rollback never lands on it again: back to the restored v1.0.0.
    again = run_of(say(chat, "/rollback staging")).when(finished)
    assert again["text"] == "Rolled back staging from v4.0.0-broken to v1.0.0.", text_of(again)
    assert current(staging) == before
    assert healthz(staging) == {"status": "healthy", "version": "1.0.0"}


def test_production_waits_for_an_approver_and_runs_once(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    production = targets["production"]
    # Two releases installed beforehand, as /deploy leaves them (the same folders, locally).
    local = Config.model_validate({"environments": {"production": fast(production)}})
    for version in ("5.0.0", "5.0.1"):
        install_release(local, "production", version)

    asked = say(chat, "/rollback production", user=BOTH)
    request = request_for(asked, "roll back *production*")
    text = request.text
    assert "Approval needed: roll back production to v5.0.0" in text
    assert "runs v5.0.1 → v5.0.0 (an instant switch)" in text
    assert block_kit_errors(request.now["blocks"]) == []
    request_id = request.buttons["approval_approve"]
    asked.private(f"(request #{request_id}); it expires in 30m")
    assert asked.posted() == []  # nothing runs before the decision

    refuse_then_approve(request, asked)
    final = run_of(asked).when(finished)
    assert final["text"] == "Rolled back production from v5.0.1 to v5.0.0.", text_of(final)
    assert "approved by <@U0APPROVER" in text_of(final)
    assert healthz(production) == {"status": "healthy", "version": "5.0.0"}
    store = Store(chat.bot.database_url)
    try:
        runs = store.deployments("production", kind="rollback", limit=10)
        assert len(runs) == 1 and runs[0].approved_by in (APPROVER, OTHER_APPROVER)
    finally:
        store.close()
    assert len([m for m in asked.posted() if "thread_ts" not in m]) == 1


def test_a_rollback_while_a_deploy_holds_the_lock_is_refused(
    chat: Conversation, gate: Path, targets: dict[str, DemoTarget]
) -> None:
    asked = say(chat, "/deploy dev 6.0.0")
    running = asked.message(":hourglass_flowing_sand: *Build*")
    other = say(chat, "/rollback dev", user=OTHER_DEPLOYER)
    refusal = other.private("dev is locked by <@U0DEPLOY1>'s deploy #")
    assert "your rollback did not start" in refusal.text
    assert f"/archives/{asked.channel}/p" in refusal.text  # a link to the deploy holding it
    assert other.posted() == []

    running.press("Cancel", as_=DEPLOYER).private("Cancel requested: deploy #")
    with gate.open("w") as writer:
        writer.write("go\n")
    assert running.when(finished)["text"].endswith("(cancelled by <@U0DEPLOY1>)")

    # Nothing to roll back to: said privately, nothing changes.
    quiet = say(chat, "/rollback qa")
    quiet.private("Nothing is installed on qa yet")
    assert quiet.posted() == []
    assert not targets["qa"].install_dir.exists()


@pytest.mark.parametrize(
    "word",
    [
        "../../etc/passwd",
        "x" * 5000,
        "20261127T120000Z-1.0;touch${IFS}/tmp/pwned",
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "eventmesh-backup-staging-20261127T120000Z.tar.gz|id",
        "eventmesh-backup-production-20261127T120000Z.tar.gz",
        "<!channel>",
    ],
    ids=[
        "traversal", "5000-chars", "semicolon", "subshell", "backticks", "pipe",
        "other-env-backup", "mention",
    ],
)  # fmt: skip
def test_hostile_ids_are_refused_before_anything_reaches_a_host(
    chat: Conversation, targets: dict[str, DemoTarget], sshd: Sshd, word: str
) -> None:
    staging = targets["staging"]
    before = tree_digest(staging.install_dir, staging.backup_dir)
    logins = sshd.log_text().count("Accepted publickey")
    sent = say(chat, f"/rollback staging {word}")
    reply = sent.answer
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"] and "/rollback <env> [<id>]" in reply["text"]
    assert "<!channel>" not in json.dumps(reply) and len(json.dumps(reply)) < 4000
    # A barrier: a command that does run, answered after anything the bad one could start.
    say(chat, "/deploy history staging").private("deployments of staging")
    assert sent.posted() == []
    assert sshd.log_text().count("Accepted publickey") == logins  # not even a login
    assert tree_digest(staging.install_dir, staging.backup_dir) == before
    assert not Path("/tmp/pwned").exists()


def test_an_unknown_id_is_answered_and_changes_nothing(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    before = tree_digest(staging.install_dir, staging.backup_dir)
    sent = say(chat, "/rollback staging 20991231T000000Z-9.9.9")
    answer = sent.private("There is no release 20991231T000000Z-9.9.9")
    assert "`/rollback list staging` shows what each host has" in answer.text
    assert sent.posted() == []
    assert tree_digest(staging.install_dir, staging.backup_dir) == before


def test_only_deployers_roll_back_and_help_shows_what_each_may_run(chat: Conversation) -> None:
    refused = say(chat, "/rollback staging", user="U0NOBODY").answer
    assert "Only deployers may run /rollback staging." in refused["text"]
    refused = say(chat, "/rollback backup staging", user="U0NOBODY").answer
    assert "Only deployers may run /rollback backup staging." in refused["text"]
    deployer = say(chat, "/rollback help").answer["text"]
    everyone = say(chat, "/rollback help", user="U0NOBODY").answer["text"]
    for usage in ("/rollback <env> [<id>]", "/rollback backup <env>"):
        assert usage in deployer and usage not in everyone
    assert "/rollback list <env>" in deployer and "/rollback list <env>" in everyone


def test_an_incident_checklist_restores_the_newest_backup_through_its_approval(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    """Complete System Failure's "Restore from most recent backup", pressed in the incident's
    thread: `/rollback production <the newest backup>`, deployers only, an approver first."""
    production = targets["production"]
    newest = backup_archive(production, "5.0.2", datetime.now(UTC))
    opened = say(chat, "/escalate production is down --env production --sev 1")
    card = opened.message("production is down", in_=INCIDENTS)
    choices = card.press("Runbook", as_=DEPLOYER).private("runbook's procedures")
    choices.press("Complete System Failure", as_=DEPLOYER)
    checklist = card.thread_line("Complete System Failure")
    label = "Run /rollback production <the newest backup>"

    checklist.press(label, as_="U0ONCALL").private("Only deployers")
    pressed = checklist.press(label, as_=OTHER_DEPLOYER)
    request = request_for(pressed, "roll back *production*")
    assert newest.name in request.text
    request.press("Approve", as_=APPROVER)
    final = run_of(pressed).when(finished)
    assert final["text"] == (
        f"Rolled back production from v5.0.0 to v5.0.2 (restored from {newest.name})."
    ), text_of(final)
    assert healthz(production) == {"status": "healthy", "version": "5.0.2"}
