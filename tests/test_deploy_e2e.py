"""/deploy end to end: signed requests to the real bot, replies in the Slack fake, real deploys.

Every environment here is a demo EventMesh service started by its `restart` command from the
release /deploy installed (tests/support/deploy_env.py), so /healthz reports what was really
deployed. Approvals, locks, the watch and its Roll back button run through the bot's buttons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bot.store import Store
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
from tests.support.conversation import Conversation, Reply, buttons, dm_of, private_among, text_of
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import finished, run_of
from tests.support.github_fake import GitHubFake, run
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd
from tests.support.waiting import wait_until

GITHUB_TOKEN = "ghp_" + "e2eTokenThatMustNeverShow" * 2


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DemoTarget]]:
    root = tmp_path_factory.mktemp("deploy-targets")
    names = ("staging", "production", "qa", "dev", "vault")
    made = {name: demo_target(root, name) for name in names}
    yield made
    for target in made.values():
        target.stop()


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubFake]:
    with GitHubFake(token=GITHUB_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def gate(targets: dict[str, DemoTarget]) -> Path:
    """A fifo dev's build waits on: a deploy to dev runs until the test lets it go on."""
    path = targets["dev"].root / "build-gate"
    os.mkfifo(path)
    return path


def builds_waiting_on(gate: Path) -> list[psutil.Process]:
    """Processes still running a build that reads the gate."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(gate) in " ".join(process.info["cmdline"] or []):
                found.append(process)
    return found


def over_ssh(env: dict[str, Any], sshd: Sshd) -> dict[str, Any]:
    del env["transport"]
    env["hosts"] = [str(sshd.host)]
    return env


def write_config(
    path: Path, targets: dict[str, DemoTarget], gate: Path, sshd: Sshd, github: GitHubFake
) -> Path:
    """staging and production are reached over SSH (the loopback sshd); qa and dev locally."""
    staging, production, qa, dev = (targets[n] for n in ("staging", "production", "qa", "dev"))
    dev_env = dev.environment()
    dev_env["build"] = f"cat {gate} > /dev/null && {dev_env['build']}"
    environments: dict[str, Any] = {
        "staging": over_ssh(staging.environment(lock_reminder="2s"), sshd),
        "production": over_ssh(
            production.environment(requires_approval=True, approval_timeout="30m"), sshd
        ),
        "canary": production.environment(requires_approval=True, approval_timeout="2s"),
        # Its package carries a file of workdir as it was when the approver was asked.
        "vault": over_ssh(
            targets["vault"].environment(
                requires_approval=True,
                approval_timeout="30m",
                artifacts=["build/eventmesh-api", "NOTES.txt"],
            ),
            sshd,
        ),
        "qa": qa.environment(watch_for="6s"),
        "dev": dev_env,
    }
    config = {
        "ssh": {
            "key_file": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts()),
            "connect_timeout": "5s",
            "command_timeout": "60s",
        },
        "slack": {"alerts_channel": "C0ALERTS", "approvals_channel": APPROVALS},
        "ci": {
            "provider": "github",
            "repository": github.repository,
            "workflow": github.workflow,
            "api_url": github.url,
            "token_env": "GH_TEST_TOKEN",
        },
        "access": {
            "deployers": [DEPLOYER, OTHER_DEPLOYER, BOTH],
            "approvers": [APPROVER, OTHER_APPROVER, BOTH],
        },
        "alerts": {"scheduled_checks": False},  # this test is about commands, not alerts
        "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
        "environments": environments,
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def bot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bot's EVENTMESH_DATA_DIR (its store, workspaces, approved packages)."""
    return tmp_path_factory.mktemp("deploy-bot")


@pytest.fixture(scope="module")
def bot(
    bot_dir: Path,
    slack: SlackFake,
    targets: dict[str, DemoTarget],
    gate: Path,
    sshd: Sshd,
    github: GitHubFake,
) -> Iterator[BotProcess]:
    tmp = bot_dir
    config = write_config(tmp / "eventmesh.yml", targets, gate, sshd, github)
    database_url = bot_database_url(tmp)
    process, url, log = start_bot(
        tmp,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        EVENTMESH_CONFIG=str(config),
        EVENTMESH_DATABASE_URL=database_url,
        GH_TEST_TOKEN=GITHUB_TOKEN,
    )
    running = BotProcess(url, process, log, database_url, slack)
    yield running
    running.http.close()
    code = stop_process(process)
    assert code == 0, f"the bot exited with {code}:\n{log.read_text()}"
    assert GITHUB_TOKEN not in log.read_text()


def deploy(chat: Conversation, text: str, user: str = DEPLOYER) -> Reply:
    return chat.as_(user).say(f"/deploy {text}")


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def store_of(chat: Conversation) -> Store:
    return Store(chat.bot.database_url)


def test_staging_end_to_end(chat: Conversation, targets: dict[str, DemoTarget]) -> None:
    staging = targets["staging"]
    first = run_of(deploy(chat, "staging 1.0.0")).when(finished)
    assert "Deployed v1.0.0 to staging" in first["text"], text_of(first)

    asked = deploy(chat, "staging 1.0.1 --skip-tests")
    run = run_of(asked)
    final = run.when(finished)
    text = text_of(final)
    assert final["text"].startswith("Deployed v1.0.1 to staging (1 host) in ")
    assert block_kit_errors(final["blocks"]) == []
    assert "Requested by <@U0DEPLOY1> · `--skip-tests`" in text
    assert ":heavy_minus_sign: *Test* — skipped (--skip-tests" in text
    assert ":white_check_mark: *Restart and verify*" in text

    # Files in place, the backup on the host, and the service runs the release.
    assert "--version 1.0.1" in staging.current_files()["eventmesh-api"]
    (backup,) = staging.backup_dir.glob("eventmesh-backup-staging-*.tar.gz")
    assert backup.name in text
    assert healthz(staging) == {"status": "healthy", "version": "1.0.1"}

    # One message, posted once and updated in place, step after step.
    posts = [
        c
        for c in chat.slack.calls_to("chat.postMessage")
        if c.args["channel"] == asked.channel and not c.args.get("thread_ts")
    ]
    assert len(posts) == 1
    updates = [
        c.args
        for c in chat.slack.calls_to("chat.update")
        if c.args["channel"] == asked.channel and c.args["ts"] == run.ts
    ]
    done = [json.dumps(u["blocks"]).count(":white_check_mark:") for u in updates]
    assert len(updates) >= 3 and done == sorted(done)
    assert any(
        ":hourglass_flowing_sand: *Restart and verify*" in json.dumps(u["blocks"]) for u in updates
    )

    # The watch reports in the thread.
    run.thread_line("stayed healthy on v1.0.1")

    store = store_of(chat)
    try:
        audit = [e for e in store.audit_entries(limit=500) if e.channel_id == asked.channel]
        (entry,) = audit
        assert (entry.command, entry.user_id, entry.text, entry.outcome) == (
            "/deploy",
            DEPLOYER,
            "staging 1.0.1 --skip-tests",
            "ok",
        )
        assert entry.result.startswith("Deployed v1.0.1 to staging")
        deployment = store.deployments("staging", limit=1)[0]
        assert (deployment.state, deployment.version) == ("succeeded", "1.0.1")
        assert deployment.options == {"dry_run": False, "skip_tests": True, "no_backup": False}
        steps = {(s.step, s.state) for s in store.deployment_steps(deployment.id)}
        assert {("build", "ok"), ("test", "skipped"), ("restart", "ok"), ("backup", "ok")} <= steps
        assert store.environment_lock("staging") is None
    finally:
        store.close()


def test_a_release_that_fails_its_health_check_is_rolled_back(
    chat: Conversation, targets: dict[str, DemoTarget], sshd: Sshd
) -> None:
    staging = targets["staging"]
    run_of(deploy(chat, "staging 2.0.0 --skip-tests")).when(finished)
    run = run_of(deploy(chat, "staging 2.0.1-broken --skip-tests"))
    final = run.when(finished)
    text = text_of(final)
    assert final["text"].startswith(
        f"Rolled back to v2.0.0: v2.0.1-broken failed its health check on host {sshd.host}: "
        "healthz answered HTTP 503"
    ), text
    assert ":leftwards_arrow_with_hook:" in text and "*Roll back*" in text
    assert healthz(staging) == {"status": "healthy", "version": "2.0.0"}
    assert "--version 2.0.0" in staging.current_files()["eventmesh-api"]
    failure = run.thread_line("Restart and verify* failed")
    assert "healthz answered HTTP 503" in failure.text


def test_production_waits_for_an_approver_and_runs_once(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    asked = deploy(chat, "production 3.0.0", user=BOTH)
    request = request_for(asked, "3.0.0")
    text = request.text
    assert "Approval needed: deploy v3.0.0 to production" in text
    assert ":white_check_mark: Tests run before the deploy" in text
    assert ":white_check_mark: Backup before anything changes" in text
    assert ":x: Rollback plan prepared" in text  # nothing installed there yet
    assert ":white_small_square: Code review approved" in text
    assert block_kit_errors(request.now["blocks"]) == []
    request_id = request.buttons["approval_approve"]
    assert request.buttons["approval_reject"] == request_id
    asked.private(f"Approval requested in <#{APPROVALS}> (request #{request_id})")
    assert asked.posted() == []  # nothing runs before the decision

    approvals = refuse_then_approve(request, asked)
    final = run_of(asked).when(finished)
    assert final["text"].startswith("Deployed v3.0.0 to production"), text_of(final)
    assert "approved by <@U0APPROVER" in text_of(final)
    assert healthz(targets["production"])["version"] == "3.0.0"

    decided = request.now
    assert "*Approved* by <@U0APPROVER" in text_of(decided)
    assert "approval_approve" not in buttons(decided)
    private_among(approvals, f"Request #{request_id} is already approved by <@U0APPROVER")
    dm = asked.message(request_id, in_=dm_of(BOTH))
    assert "was approved by <@U0APPROVER" in dm.text
    store = store_of(chat)
    try:
        runs = [d for d in store.deployments("production", limit=50) if d.version == "3.0.0"]
        assert len(runs) == 1 and runs[0].approved_by in (APPROVER, OTHER_APPROVER)
    finally:
        store.close()
    assert len([m for m in asked.posted() if "thread_ts" not in m]) == 1


def test_a_rejected_request_runs_nothing(chat: Conversation) -> None:
    asked = deploy(chat, "production 3.1.0 --no-backup")
    request = request_for(asked, "3.1.0")
    assert ":x: Backup before anything changes — --no-backup" in request.text
    request_id = request.buttons["approval_reject"]
    approve = request.button("Approve")  # left open by someone who presses it late
    request.press("Reject", as_=APPROVER)
    decided = request.when("*Rejected* by <@U0APPROVER1>")
    assert "approval_approve" not in buttons(decided)
    approve.press(APPROVER).private(f"Request #{request_id} is already rejected")
    assert asked.posted() == []


def test_an_undecided_request_expires(chat: Conversation) -> None:
    asked = deploy(chat, "canary 4.0.0")
    request = request_for(asked, "canary")
    request_id = request.buttons["approval_approve"]
    approve = request.button("Approve")  # left open until after it expired
    expired = request.when("*Expired*")
    assert "nobody decided within 2s" in text_of(expired)
    approve.press(APPROVER).private(f"Request #{request_id} is already expired")
    assert asked.posted() == []


def test_a_second_deploy_is_refused_while_one_runs_and_cancel_stops_it(
    chat: Conversation, gate: Path, targets: dict[str, DemoTarget]
) -> None:
    asked = deploy(chat, "dev 5.0.0")
    running = asked.message(":hourglass_flowing_sand: *Build*")
    other = deploy(chat, "dev 5.0.1", user=OTHER_DEPLOYER)
    refusal = other.private("dev is locked by <@U0DEPLOY1>'s deploy #")
    assert "your deploy did not start" in refusal.text
    assert f"/archives/{asked.channel}/p" in refusal.text  # a link to the running deploy
    assert other.posted() == []

    nobody = running.press("Cancel", as_="U0NOBODY")
    nobody.private("Only approvers or whoever asked for it may press Cancel.")
    running.press("Cancel", as_=DEPLOYER).private("Cancel requested: deploy #")
    # The build (still waiting on the gate) is stopped at once, its whole process group.
    final = running.when(finished)
    assert final["text"].startswith("Cancelled during Build: its processes were stopped"), text_of(
        final
    )
    assert final["text"].endswith("(cancelled by <@U0DEPLOY1>)"), text_of(final)
    assert builds_waiting_on(gate) == []
    assert not targets["dev"].install_dir.exists()


@pytest.mark.parametrize(
    "text",
    [
        "nosuchenv",
        "staging 1.0;rm -rf /",
        "$(id)",
        "staging $(id)",
        "staging `id`",
        "staging 1.0 --force",
        "staging 1.0 2.0",
        "x" * 5000,
        "<@U0CTO> <!channel>",
    ],
    ids=[
        "unknown-env", "semicolon", "subshell-env", "subshell-version", "backticks",
        "unknown-flag", "two-versions", "5000-chars", "mentions",
    ],
)  # fmt: skip
def test_bad_input_answers_with_the_usage_and_runs_nothing(
    chat: Conversation, targets: dict[str, DemoTarget], text: str
) -> None:
    before = targets["staging"].current_files() if targets["staging"].install_dir.exists() else {}
    sent = deploy(chat, text)
    reply = sent.answer
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"] and "/deploy <env> [<version>]" in reply["text"]
    rendered = json.dumps(reply)
    assert "<@U0CTO>" not in rendered and "<!channel>" not in rendered
    assert len(rendered) < 4000
    # A barrier: a command that does run, answered after anything the bad one could start.
    barrier = deploy(chat, "history staging")
    barrier.private("deployments of staging")
    assert sent.posted() == []
    assert barrier.posted() == []
    after = targets["staging"].current_files() if targets["staging"].install_dir.exists() else {}
    assert after == before


def test_only_deployers_deploy_and_help_shows_what_each_may_run(chat: Conversation) -> None:
    refused = deploy(chat, "staging 1.0.0", user="U0NOBODY").answer
    assert refused["response_type"] == "ephemeral"
    assert (
        "Only deployers may run /deploy staging. (access.deployers in the config)"
        in refused["text"]
    )

    deployer = deploy(chat, "help").answer["text"]
    everyone = deploy(chat, "help", user="U0NOBODY").answer["text"]
    for usage in ("/deploy <env> [<version>]", "/deploy lock <env>", "/deploy unlock <env>"):
        assert usage in deployer and usage not in everyone
    for usage in ("/deploy status [<env>]", "/deploy history <env>", "/deploy help"):
        assert usage in deployer and usage in everyone


def test_a_lock_by_hand_holds_deploys_off_until_freed(chat: Conversation) -> None:
    locking = deploy(chat, "lock staging incident 77 <!channel>")
    locking.message("locked staging")
    assert "<!channel>" not in json.dumps(locking.posted())
    reminder = locking.message("held staging", in_=dm_of(DEPLOYER))
    assert "/deploy unlock staging" in reminder.text

    held = deploy(chat, "staging 6.0.0", user=OTHER_DEPLOYER)
    refusal = held.private("staging is held by hand by <@U0DEPLOY1> since")
    assert "incident 77" in refusal.text

    unlocking = chat.as_(OTHER_DEPLOYER).say("/deploy unlock staging", in_=locking.channel)
    confirm = unlocking.private("Free it anyway?")
    freeing = confirm.press("Free it", as_=OTHER_DEPLOYER)
    freed = freeing.message("freed staging")
    assert "<@U0DEPLOY2> freed staging, which <@U0DEPLOY1> held since" in freed.text
    freeing.message("freed staging", in_=dm_of(DEPLOYER))
    store = store_of(chat)
    try:
        assert store.environment_lock("staging") is None
    finally:
        store.close()


def test_status_history_and_a_dry_run(chat: Conversation, targets: dict[str, DemoTarget]) -> None:
    run = run_of(deploy(chat, "staging 7.0.0 --dry-run"))
    final = run.when(finished)
    assert final["text"].startswith("Dry run of v7.0.0 to staging on 1 host: nothing was")
    commands = run.thread_line("the exact commands")
    assert targets["staging"].supervise("restart") in commands.text.replace("&amp;", "&")
    assert "7.0.0" not in json.dumps(targets["staging"].current_files())

    history = deploy(chat, "history staging", user="U0NOBODY").private("Deploy history · staging")
    text = history.text
    assert "*v1.0.1* by <@U0DEPLOY1>" in text and "`--skip-tests`" in text
    assert "rolled back" in text  # the -broken one

    status = deploy(chat, "status", user="U0NOBODY").private("Deploy status · all environments")
    assert "*Running now:* nothing" in status.text


def test_a_failure_in_the_watch_offers_a_roll_back_that_works(
    chat: Conversation, targets: dict[str, DemoTarget]
) -> None:
    qa = targets["qa"]
    run_of(deploy(chat, "qa 8.0.0 --skip-tests")).when(finished)
    run = run_of(deploy(chat, "qa 8.0.1 --skip-tests"))
    final = run.when(finished)
    assert final["text"].startswith("Deployed v8.0.1 to qa")
    run.thread_line("Watching qa's health")
    httpx.post(f"{qa.url}/admin/faults", json={"healthz_status": 500}, timeout=5)
    alarm = run.thread_line("qa is unhealthy after the deploy")
    nobody = alarm.press("Roll back", as_="U0NOBODY")
    nobody.private("Only deployers may press Roll back.")
    rolled = run_of(alarm.press("Roll back", as_=DEPLOYER)).when(finished)
    assert rolled["text"] == "Rolled back qa from v8.0.1 to v8.0.0.", text_of(rolled)
    assert healthz(qa) == {"status": "healthy", "version": "8.0.0"}
    lines = [json.loads(x) for x in (qa.install_dir / "releases.log").read_text().splitlines()]
    assert lines[-1]["event"] == "bad" and lines[-1]["release"].endswith("-8.0.1")
    assert run.thread()  # the watch's messages stayed in the thread


def test_a_red_ci_stops_the_deploy_and_status_lists_the_last_runs(
    chat: Conversation, github: GitHubFake, targets: dict[str, DemoTarget]
) -> None:
    github.set_runs(run(12, "failure", sha="feedface00"), run(11, "success"), run(10, "success"))
    try:
        final = run_of(deploy(chat, "staging 9.0.0")).when(finished)
        assert final["text"].startswith(
            "Deploy of v9.0.0 to staging failed at Checklist: CI: CI is not green: the latest "
            "ci.yml run on main (feedfac) ended: failure"
        ), text_of(final)
        assert "9.0.0" not in json.dumps(targets["staging"].current_files())

        status = deploy(chat, "status staging", user="U0NOBODY").private("Deploy status · staging")
        assert "CI: last 3 runs of ci.yml on main" in status.text
        assert ":x: <https://github.example/eventmesh/eventmesh/actions/runs/12|CI>" in status.text
        assert github.requests[-1].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
        assert GITHUB_TOKEN not in json.dumps(chat.slack.summary())
    finally:
        github.set_runs(run(1, "success"))


def approved_sha256(request_text: str) -> str:
    match = re.search(r"\*sha256:\* `([0-9a-f]{64})`", request_text)
    assert match is not None, request_text
    return match.group(1)


def test_an_approval_deploys_the_package_approved_not_what_workdir_holds_later(
    chat: Conversation, targets: dict[str, DemoTarget], bot_dir: Path
) -> None:
    vault = targets["vault"]
    notes = vault.workdir / "NOTES.txt"
    notes.write_text("what the approver was shown\n")
    asked = deploy(chat, "vault 11.0.0")
    asked.private("Building v11.0.0 for vault before asking for approval")
    request = request_for(asked, "11.0.0")
    sha256 = approved_sha256(request.text)
    assert "*Package:* `eventmesh-11.0.0.tar.gz` (built and tested by the bot)" in request.text
    assert "*Commit:* _workdir is not a git checkout_" in request.text
    assert asked.posted() == []  # built before the request, nothing ran on the hosts
    assert not vault.install_dir.exists()

    notes.write_text("changed after the request was asked\n")  # someone edits workdir
    request.press("Approve", as_=APPROVER)
    final = run_of(asked).when(finished)
    assert final["text"].startswith("Deployed v11.0.0 to vault"), text_of(final)
    text = text_of(final)
    assert "built before the approval" in text and "tested before the approval" in text
    assert f"sha256 {sha256[:12]}… unchanged" in text
    # The host runs the approved bytes, not what workdir holds now.
    assert vault.current_files()["NOTES.txt"] == "what the approver was shown\n"
    package = vault.install_dir / "packages" / "eventmesh-11.0.0.tar.gz"
    assert hashlib.sha256(package.read_bytes()).hexdigest() == sha256
    log = [json.loads(line) for line in (vault.install_dir / "releases.log").read_text().split()]
    assert [e["sha256"] for e in log if e["event"] == "installed"] == [sha256]
    assert healthz(vault)["version"] == "11.0.0"
    # The approved package and the build's workspace are gone once it ran.
    # (Removed as the run ends, a moment after its last message.)
    wait_until(
        "the approved package and the workspace removed",
        lambda: (
            list((bot_dir / "approved").iterdir()) == []
            and [p for p in (bot_dir / "workspaces").iterdir() if not p.name.startswith("package")]
            == []
        ),
    )


def test_an_approved_package_changed_before_the_deploy_is_refused(
    chat: Conversation, targets: dict[str, DemoTarget], bot_dir: Path
) -> None:
    vault = targets["vault"]
    (vault.workdir / "NOTES.txt").write_text("approved notes\n")
    asked = deploy(chat, "vault 11.0.1")
    request = request_for(asked, "11.0.1")
    sha256 = approved_sha256(request.text)
    (pinned,) = (bot_dir / "approved").glob("vault-*/eventmesh-11.0.1.tar.gz")
    pinned.write_bytes(b"not what the approver approved")  # tampered with on the bot's disk
    found = hashlib.sha256(pinned.read_bytes()).hexdigest()
    request.press("Approve", as_=APPROVER)
    final = run_of(asked).when(finished)
    assert final["text"].startswith("Deploy of v11.0.1 to vault failed at Package"), text_of(final)
    changed = f"has changed since the approval (sha256 {found[:12]}…, approved {sha256[:12]}…)"
    assert changed in final["text"]
    assert "nothing was deployed; ask for approval again" in final["text"]
    assert healthz(vault)["version"] == "11.0.0"
    assert not (vault.install_dir / "packages" / "eventmesh-11.0.1.tar.gz").exists()
