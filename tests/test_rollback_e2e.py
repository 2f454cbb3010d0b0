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
    BotProcess,
    bot_database_url,
    start_bot,
    stop_process,
)
from tests.support.approvals import (
    APPROVER,
    BOTH,
    DEPLOYER,
    OTHER_APPROVER,
    OTHER_DEPLOYER,
    newest_request,
    refuse_then_approve,
)
from tests.support.deploy_env import (
    DemoTarget,
    backup_archive,
    demo_target,
    install_release,
    tree_digest,
)
from tests.support.deploy_reports import (
    buttons,
    final_deploy,
    responses_so_far,
    text_of,
    wait_for_response,
    wait_in_thread,
)
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd

ALERTS, APPROVALS, INCIDENTS = "C0ALERTS", "C0APPROVALS", "C0INCIDENTS"


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


def send(bot: BotProcess, command: str, text: str, user: str = DEPLOYER) -> str:
    sent = bot.command(command, text, user_id=user)
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    return sent.channel


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def current(target: DemoTarget) -> str:
    return (target.install_dir / "current").readlink().name


def log_events(target: DemoTarget) -> list[dict[str, Any]]:
    text = (target.install_dir / "releases.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def latest_rollback(bot: BotProcess, env: str) -> Deployment:
    store = Store(bot.database_url)
    try:
        return store.deployments(env, kind="rollback", limit=1)[0]
    finally:
        store.close()


def alerts_about(slack: SlackFake, words: str) -> dict[str, Any]:
    return slack.wait_for(
        lambda fake: next((m for m in fake.channel_messages(ALERTS) if words in text_of(m)), None),
        timeout=60,
    )


def checklist_when(slack: SlackFake, channel: str, words: str) -> dict[str, Any]:
    """The rollback message once it shows words (the lines done after the run come last)."""
    return slack.wait_for(
        lambda fake: next(
            (
                m
                for m in fake.channel_messages(channel)
                if "thread_ts" not in m and words in text_of(m)
            ),
            None,
        ),
        timeout=60,
    )


def test_deploy_twice_then_roll_back_staging(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    assert (
        "Deployed v1.0.0" in final_deploy(bot.slack, send(bot, "/deploy", "staging 1.0.0"))["text"]
    )
    first = current(staging)
    second = final_deploy(bot.slack, send(bot, "/deploy", "staging 2.0.0 --skip-tests"))
    assert "Deployed v2.0.0" in second["text"]
    left = current(staging)

    # What there is to go back to: open to everyone, answered privately.
    mark = responses_so_far(bot.slack)
    send(bot, "/rollback", "list staging", user="U0NOBODY")
    listing = text_of(wait_for_response(bot.slack, "Rollback targets · staging", since=mark))
    assert f"`{left}` · *v2.0.0*" in listing and ":large_green_circle: *current*" in listing
    chosen = next(line for line in listing.splitlines() if line.startswith(f"`{first}`"))
    assert chosen.startswith(f"`{first}` · *v1.0.0* · installed")
    assert chosen.endswith("← `/rollback staging` goes here")
    (backup,) = staging.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    assert f"`{backup.name}` · of *v1.0.0*" in listing
    assert f"`/rollback staging` now goes back to release {first} (v1.0.0)" in listing

    channel = send(bot, "/rollback", "staging")
    final = final_deploy(bot.slack, channel)
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
    wait_in_thread(bot.slack, channel, final["ts"], "Follow-up checks of staging: one every 1s")
    wait_in_thread(bot.slack, channel, final["ts"], "Follow-up check 1 of 2")
    done = wait_in_thread(bot.slack, channel, final["ts"], "Follow-up checks done")
    assert "staging stayed healthy on v1.0.0 (2 checks, all passed)" in text_of(done)
    rollback = latest_rollback(bot, "staging")
    summary = alerts_about(bot.slack, f"rollback #{rollback.id} ·")
    assert "Rollback of staging: done" in text_of(summary)
    bot.slack.wait_for(
        lambda fake: (
            "Follow-up checks done"
            in text_of(next(m for m in fake.channel_messages(ALERTS) if m["ts"] == summary["ts"]))
        ),
        timeout=30,
    )
    checklist = text_of(checklist_when(bot.slack, channel, ":white_check_mark: *Follow-up checks*"))
    assert ":white_check_mark: *Summary in the alerts channel* — posted" in checklist
    assert ":white_check_mark: *Incident record* — rollback #" in checklist
    assert "no incident opened: the rollback succeeded" in checklist
    assert (rollback.state, rollback.version, rollback.requested_by) == (
        "succeeded",
        "1.0.0",
        DEPLOYER,
    )


def test_a_rollback_is_undone_and_an_older_backup_restored_exactly(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    releases = sorted(p.name for p in (staging.install_dir / "releases").iterdir())
    (left,) = [r for r in releases if r.endswith("-2.0.0")]
    undone = final_deploy(bot.slack, send(bot, "/rollback", f"staging {left}"))
    assert undone["text"] == "Rolled back staging from v1.0.0 to v2.0.0.", text_of(undone)
    assert healthz(staging)["version"] == "2.0.0"

    (older,) = staging.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")  # of v1.0.0
    backed = final_deploy(bot.slack, send(bot, "/rollback", "backup staging"))
    assert backed["text"].startswith("Backed up staging of v2.0.0: eventmesh-backup-staging-")
    newer = {p.name for p in staging.backup_dir.glob("*.tar.gz")} - {older.name}
    assert len(newer) == 1 and newer.pop() in backed["text"]

    stamp = older.name.removeprefix("eventmesh-backup-staging-").removesuffix(".tar.gz")
    channel = send(bot, "/rollback", f"staging {stamp}")
    final = final_deploy(bot.slack, channel)
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
    bot: BotProcess, targets: dict[str, DemoTarget], sshd: Sshd
) -> None:
    staging = targets["staging"]
    before = current(staging)
    broken = backup_archive(staging, "4.0.0-broken", datetime.now(UTC))
    channel = send(bot, "/rollback", f"staging {broken.name}")
    final = final_deploy(bot.slack, channel)
    text = text_of(final)
    assert final["text"].startswith(
        f"Rollback of staging to v4.0.0-broken failed at Health checks on {sshd.host}: failed "
        f"its health check on host {sshd.host}: healthz answered HTTP 503"
    ), text
    assert "Rolled back" not in text and "succeeded" not in text
    assert f"Now: {sshd.host} runs v4.0.0-broken, which failed its health check" in text
    assert ":x: *Health checks*" in text
    wait_in_thread(bot.slack, channel, final["ts"], "Health checks* failed")

    rollback = latest_rollback(bot, "staging")
    assert rollback.state == "rollback_failed"
    incident = bot.slack.wait_for(
        lambda fake: next(
            (
                m
                for m in fake.channel_messages(INCIDENTS)
                if f"Rollback #{rollback.id}: Rollback of staging" in shown(m)
            ),
            None,
        ),
        timeout=30,
    )
    assert "SEV 2" in shown(incident)
    summary = alerts_about(bot.slack, f"rollback #{rollback.id} ·")
    assert "Rollback of staging: FAILED" in text_of(summary) and "INC-" in text_of(summary)
    checklist = text_of(checklist_when(bot.slack, channel, "*Incident record* — INC-"))
    assert "opened (SEV 2): the escalation path is being paged" in checklist
    assert ":heavy_minus_sign: *Follow-up checks* — the rollback did not complete" in checklist
    bad = [e for e in log_events(staging) if e["event"] == "bad"]
    assert bad[-1]["release"] == current(staging) != before

    # The next rollback never lands on it again: back to the restored v1.0.0.
    again = final_deploy(bot.slack, send(bot, "/rollback", "staging"))
    assert again["text"] == "Rolled back staging from v4.0.0-broken to v1.0.0.", text_of(again)
    assert current(staging) == before
    assert healthz(staging) == {"status": "healthy", "version": "1.0.0"}


def test_production_waits_for_an_approver_and_runs_once(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    production = targets["production"]
    # Two releases installed beforehand, as /deploy leaves them (the same folders, locally).
    local = Config.model_validate({"environments": {"production": fast(production)}})
    for version in ("5.0.0", "5.0.1"):
        install_release(local, "production", version)

    mark = responses_so_far(bot.slack)
    channel = send(bot, "/rollback", "production", user=BOTH)
    request = newest_request(bot.slack, APPROVALS, BOTH, "roll back *production*")
    text = text_of(request)
    assert "Approval needed: roll back production to v5.0.0" in text
    assert "runs v5.0.1 → v5.0.0 (an instant switch)" in text
    assert block_kit_errors(request["blocks"]) == []
    request_id = buttons(request)["approval_approve"]
    wait_for_response(bot.slack, f"(request #{request_id}); it expires in 30m", since=mark)
    assert bot.slack.channel_messages(channel) == []  # nothing runs before the decision

    refuse_then_approve(bot, request, approvals=APPROVALS, channel=channel)
    final = final_deploy(bot.slack, channel)
    assert final["text"] == "Rolled back production from v5.0.1 to v5.0.0.", text_of(final)
    assert "approved by <@U0APPROVER" in text_of(final)
    assert healthz(production) == {"status": "healthy", "version": "5.0.0"}
    store = Store(bot.database_url)
    try:
        runs = store.deployments("production", kind="rollback", limit=10)
        assert len(runs) == 1 and runs[0].approved_by in (APPROVER, OTHER_APPROVER)
    finally:
        store.close()
    assert len([m for m in bot.slack.channel_messages(channel) if "thread_ts" not in m]) == 1


def test_a_rollback_while_a_deploy_holds_the_lock_is_refused(
    bot: BotProcess, gate: Path, targets: dict[str, DemoTarget]
) -> None:
    channel = send(bot, "/deploy", "dev 6.0.0")
    running = bot.slack.wait_for(
        lambda fake: next(
            (
                m
                for m in fake.channel_messages(channel)
                if ":hourglass_flowing_sand: *Build*" in text_of(m)
            ),
            None,
        ),
        timeout=60,
    )
    mark = responses_so_far(bot.slack)
    other = send(bot, "/rollback", "dev", user=OTHER_DEPLOYER)
    refusal = wait_for_response(bot.slack, "dev is locked by <@U0DEPLOY1>'s deploy #", since=mark)
    assert "your rollback did not start" in text_of(refusal)
    assert f"/archives/{channel}/p" in text_of(refusal)  # a link to the deploy holding it
    assert bot.slack.channel_messages(other) == []

    bot.press(
        "deploy_cancel",
        buttons(running)["deploy_cancel"],
        channel=channel,
        message_ts=running["ts"],
        user_id=DEPLOYER,
    )
    wait_for_response(bot.slack, "Cancel requested: deploy #", since=mark)
    with gate.open("w") as writer:
        writer.write("go\n")
    assert final_deploy(bot.slack, channel)["text"].endswith("(cancelled by <@U0DEPLOY1>)")

    # Nothing to roll back to: said privately, nothing changes.
    mark = responses_so_far(bot.slack)
    quiet = send(bot, "/rollback", "qa")
    wait_for_response(bot.slack, "Nothing is installed on qa yet", since=mark)
    assert bot.slack.channel_messages(quiet) == []
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
    bot: BotProcess, targets: dict[str, DemoTarget], sshd: Sshd, word: str
) -> None:
    staging = targets["staging"]
    before = tree_digest(staging.install_dir, staging.backup_dir)
    logins = sshd.log_text().count("Accepted publickey")
    sent = bot.command("/rollback", f"staging {word}", user_id=DEPLOYER)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"] and "/rollback <env> [<id>]" in reply["text"]
    assert "<!channel>" not in json.dumps(reply) and len(json.dumps(reply)) < 4000
    # A barrier: a command that does run, answered after anything the bad one could start.
    mark = responses_so_far(bot.slack)
    bot.command("/deploy", "history staging", user_id=DEPLOYER)
    wait_for_response(bot.slack, "deployments of staging", since=mark)
    assert bot.slack.channel_messages(sent.channel) == []
    assert sshd.log_text().count("Accepted publickey") == logins  # not even a login
    assert tree_digest(staging.install_dir, staging.backup_dir) == before
    assert not Path("/tmp/pwned").exists()


def test_an_unknown_id_is_answered_and_changes_nothing(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    staging = targets["staging"]
    before = tree_digest(staging.install_dir, staging.backup_dir)
    mark = responses_so_far(bot.slack)
    sent = bot.command("/rollback", "staging 20991231T000000Z-9.9.9", user_id=DEPLOYER)
    answer = wait_for_response(bot.slack, "There is no release 20991231T000000Z-9.9.9", since=mark)
    assert "`/rollback list staging` shows what each host has" in text_of(answer)
    assert bot.slack.channel_messages(sent.channel) == []
    assert tree_digest(staging.install_dir, staging.backup_dir) == before


def test_only_deployers_roll_back_and_help_shows_what_each_may_run(bot: BotProcess) -> None:
    refused = bot.command("/rollback", "staging", user_id="U0NOBODY").response.json()
    assert "Only deployers (access.deployers in the config) may roll back." in refused["text"]
    refused = bot.command("/rollback", "backup staging", user_id="U0NOBODY").response.json()
    assert "Only deployers (access.deployers) may take backups." in refused["text"]
    deployer = bot.command("/rollback", "help", user_id=DEPLOYER).response.json()["text"]
    everyone = bot.command("/rollback", "help", user_id="U0NOBODY").response.json()["text"]
    for usage in ("/rollback <env> [<id>]", "/rollback backup <env>"):
        assert usage in deployer and usage not in everyone
    assert "/rollback list <env>" in deployer and "/rollback list <env>" in everyone
