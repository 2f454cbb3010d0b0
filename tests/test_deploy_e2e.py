"""/deploy end to end: signed requests to the real bot, replies in the Slack fake, real deploys.

Every environment here is a demo EventMesh service started by its `restart` command from the
release /deploy installed (tests/support/deploy_env.py), so /healthz reports what was really
deployed. Approvals, locks, the watch and its Roll back button run through the bot's buttons.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.store import Store
from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    BotProcess,
    bot_database_url,
    new_channel,
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
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import (
    buttons,
    final_deploy,
    responses_so_far,
    text_of,
    thread,
    wait_for_response,
    wait_in_thread,
)
from tests.support.github_fake import GitHubFake, run
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.sshd import Sshd

GITHUB_TOKEN = "ghp_" + "e2eTokenThatMustNeverShow" * 2
APPROVALS = "C0APPROVALS"


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DemoTarget]]:
    root = tmp_path_factory.mktemp("deploy-targets")
    made = {name: demo_target(root, name) for name in ("staging", "production", "qa", "dev")}
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


def open_gate(gate: Path) -> None:
    with gate.open("w") as writer:
        writer.write("go\n")


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
        "canary": production.environment(
            requires_approval=True, approval_timeout="2s", build="false"
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
        "environments": environments,
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def bot(
    tmp_path_factory: pytest.TempPathFactory,
    slack: SlackFake,
    targets: dict[str, DemoTarget],
    gate: Path,
    sshd: Sshd,
    github: GitHubFake,
) -> Iterator[BotProcess]:
    tmp = tmp_path_factory.mktemp("deploy-bot")
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


def deploy(bot: BotProcess, text: str, user: str = DEPLOYER, channel: str | None = None) -> str:
    sent = bot.command("/deploy", text, user_id=user, channel=channel)
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    return sent.channel


def healthz(target: DemoTarget) -> dict[str, Any]:
    return httpx.get(f"{target.url}/healthz", timeout=5).json()


def store_of(bot: BotProcess) -> Store:
    return Store(bot.database_url)


def test_staging_end_to_end(bot: BotProcess, targets: dict[str, DemoTarget]) -> None:
    staging = targets["staging"]
    first = final_deploy(bot.slack, deploy(bot, "staging 1.0.0"))
    assert "Deployed v1.0.0 to staging" in first["text"], text_of(first)

    channel = deploy(bot, "staging 1.0.1 --skip-tests")
    final = final_deploy(bot.slack, channel)
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
        for c in bot.slack.calls_to("chat.postMessage")
        if c.args["channel"] == channel and not c.args.get("thread_ts")
    ]
    assert len(posts) == 1
    updates = [
        c.args
        for c in bot.slack.calls_to("chat.update")
        if c.args["channel"] == channel and c.args["ts"] == final["ts"]
    ]
    done = [json.dumps(u["blocks"]).count(":white_check_mark:") for u in updates]
    assert len(updates) >= 3 and done == sorted(done)
    assert any(
        ":hourglass_flowing_sand: *Restart and verify*" in json.dumps(u["blocks"]) for u in updates
    )

    # The watch reports in the thread.
    wait_in_thread(bot.slack, channel, final["ts"], "stayed healthy on v1.0.1")

    store = store_of(bot)
    try:
        audit = [e for e in store.audit_entries(limit=500) if e.channel_id == channel]
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
    bot: BotProcess, targets: dict[str, DemoTarget], sshd: Sshd
) -> None:
    staging = targets["staging"]
    final_deploy(bot.slack, deploy(bot, "staging 2.0.0 --skip-tests"))
    channel = deploy(bot, "staging 2.0.1-broken --skip-tests")
    final = final_deploy(bot.slack, channel)
    text = text_of(final)
    assert final["text"].startswith(
        f"Rolled back to v2.0.0: v2.0.1-broken failed its health check on host {sshd.host}: "
        "healthz answered HTTP 503"
    ), text
    assert ":leftwards_arrow_with_hook:" in text and "*Roll back*" in text
    assert healthz(staging) == {"status": "healthy", "version": "2.0.0"}
    assert "--version 2.0.0" in staging.current_files()["eventmesh-api"]
    failure = wait_in_thread(bot.slack, channel, final["ts"], "Restart and verify* failed")
    assert "healthz answered HTTP 503" in text_of(failure)


def approval_message(slack: SlackFake, request_id: str) -> dict[str, Any]:
    def found(fake: SlackFake) -> dict[str, Any] | None:
        for message in fake.channel_messages(APPROVALS):
            if f"request #{request_id} " in text_of(message):
                return message
        return None

    return slack.wait_for(found)


def test_production_waits_for_an_approver_and_runs_once(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    mark = responses_so_far(bot.slack)
    channel = deploy(bot, "production 3.0.0", user=BOTH)
    request = newest_request(bot.slack, APPROVALS, BOTH, "3.0.0")
    text = text_of(request)
    assert "Approval needed: deploy v3.0.0 to production" in text
    assert ":white_check_mark: Tests run before the deploy" in text
    assert ":white_check_mark: Backup before anything changes" in text
    assert ":x: Rollback plan prepared" in text  # nothing installed there yet
    assert ":white_small_square: Code review approved" in text
    assert block_kit_errors(request["blocks"]) == []
    request_id = buttons(request)["approval_approve"]
    assert buttons(request)["approval_reject"] == request_id
    wait_for_response(
        bot.slack, f"Approval requested in <#{APPROVALS}> (request #{request_id})", since=mark
    )
    assert bot.slack.channel_messages(channel) == []  # nothing runs before the decision

    refuse_then_approve(bot, request, approvals=APPROVALS, channel=channel)
    final = final_deploy(bot.slack, channel)
    assert final["text"].startswith("Deployed v3.0.0 to production"), text_of(final)
    assert "approved by <@U0APPROVER" in text_of(final)
    assert healthz(targets["production"])["version"] == "3.0.0"

    decided = approval_message(bot.slack, request_id)
    assert "*Approved* by <@U0APPROVER" in text_of(decided)
    assert "approval_approve" not in buttons(decided)
    wait_for_response(
        bot.slack, f"Request #{request_id} is already approved by <@U0APPROVER", since=mark
    )
    dm = bot.slack.wait_for(
        lambda fake: [m for m in fake.channel_messages("D0BOTH") if request_id in text_of(m)]
    )
    assert "was approved by <@U0APPROVER" in text_of(dm[0])
    store = store_of(bot)
    try:
        runs = [d for d in store.deployments("production", limit=50) if d.version == "3.0.0"]
        assert len(runs) == 1 and runs[0].approved_by in (APPROVER, OTHER_APPROVER)
    finally:
        store.close()
    assert len([m for m in bot.slack.channel_messages(channel) if "thread_ts" not in m]) == 1


def decided_as(slack: SlackFake, request_id: str, words: str) -> dict[str, Any]:
    return slack.wait_for(
        lambda fake: next(
            (
                m
                for m in fake.channel_messages(APPROVALS)
                if f"request #{request_id} " in text_of(m) and words in text_of(m)
            ),
            None,
        ),
        timeout=30,
    )


def test_a_rejected_request_runs_nothing(bot: BotProcess) -> None:
    channel = deploy(bot, "production 3.1.0 --no-backup")
    request = newest_request(bot.slack, APPROVALS, DEPLOYER, "3.1.0")
    assert ":x: Backup before anything changes — --no-backup" in text_of(request)
    request_id = buttons(request)["approval_reject"]
    bot.press(
        "approval_reject", request_id, channel=APPROVALS, message_ts=request["ts"], user_id=APPROVER
    )
    decided = decided_as(bot.slack, request_id, "*Rejected* by <@U0APPROVER1>")
    assert "approval_approve" not in buttons(decided)
    mark = responses_so_far(bot.slack)
    bot.press(
        "approval_approve",
        request_id,
        channel=APPROVALS,
        message_ts=request["ts"],
        user_id=APPROVER,
    )
    wait_for_response(bot.slack, f"Request #{request_id} is already rejected", since=mark)
    assert bot.slack.channel_messages(channel) == []


def test_an_undecided_request_expires(bot: BotProcess) -> None:
    channel = deploy(bot, "canary 4.0.0")
    request = newest_request(bot.slack, APPROVALS, DEPLOYER, "canary")
    request_id = buttons(request)["approval_approve"]
    expired = decided_as(bot.slack, request_id, "*Expired*")
    assert "nobody decided within 2s" in text_of(expired)
    mark = responses_so_far(bot.slack)
    bot.press(
        "approval_approve",
        request_id,
        channel=APPROVALS,
        message_ts=request["ts"],
        user_id=APPROVER,
    )
    wait_for_response(bot.slack, f"Request #{request_id} is already expired", since=mark)
    assert bot.slack.channel_messages(channel) == []


def test_a_second_deploy_is_refused_while_one_runs_and_cancel_stops_it(
    bot: BotProcess, gate: Path, targets: dict[str, DemoTarget]
) -> None:
    channel = deploy(bot, "dev 5.0.0")

    def building(fake: SlackFake) -> dict[str, Any] | None:
        for message in fake.channel_messages(channel):
            if ":hourglass_flowing_sand: *Build*" in text_of(message):
                return message
        return None

    running = bot.slack.wait_for(building, timeout=60)
    mark = responses_so_far(bot.slack)
    other = deploy(bot, "dev 5.0.1", user=OTHER_DEPLOYER)
    refusal = wait_for_response(bot.slack, "dev is locked by <@U0DEPLOY1>'s deploy #", since=mark)
    assert "your deploy did not start" in text_of(refusal)
    assert f"/archives/{channel}/p" in text_of(refusal)  # a link to the running deploy
    assert bot.slack.channel_messages(other) == []

    cancel = buttons(running)["deploy_cancel"]
    mark = responses_so_far(bot.slack)
    bot.press(
        "deploy_cancel", cancel, channel=channel, message_ts=running["ts"], user_id="U0NOBODY"
    )
    wait_for_response(
        bot.slack, "Only <@U0DEPLOY1> (who asked) or an approver can cancel", since=mark
    )
    mark = responses_so_far(bot.slack)
    bot.press("deploy_cancel", cancel, channel=channel, message_ts=running["ts"], user_id=DEPLOYER)
    wait_for_response(bot.slack, "Cancel requested: deploy #", since=mark)
    open_gate(gate)
    final = final_deploy(bot.slack, channel)
    assert final["text"].startswith("Cancelled before Test"), text_of(final)
    assert final["text"].endswith("(cancelled by <@U0DEPLOY1>)"), text_of(final)
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
    bot: BotProcess, targets: dict[str, DemoTarget], text: str
) -> None:
    before = targets["staging"].current_files() if targets["staging"].install_dir.exists() else {}
    sent = bot.command("/deploy", text, user_id=DEPLOYER)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"] and "/deploy <env> [<version>]" in reply["text"]
    rendered = json.dumps(reply)
    assert "<@U0CTO>" not in rendered and "<!channel>" not in rendered
    assert len(rendered) < 4000
    # A barrier: a command that does run, answered after anything the bad one could start.
    mark = responses_so_far(bot.slack)
    barrier = bot.command("/deploy", "history staging", user_id=DEPLOYER)
    wait_for_response(bot.slack, "deployments of staging", since=mark)
    assert bot.slack.channel_messages(sent.channel) == []
    assert bot.slack.channel_messages(barrier.channel) == []
    after = targets["staging"].current_files() if targets["staging"].install_dir.exists() else {}
    assert after == before


def test_only_deployers_deploy_and_help_shows_what_each_may_run(bot: BotProcess) -> None:
    refused = bot.command("/deploy", "staging 1.0.0", user_id="U0NOBODY").response.json()
    assert refused["response_type"] == "ephemeral"
    assert "Only deployers (access.deployers in the config) may run /deploy." in refused["text"]

    deployer = bot.command("/deploy", "help", user_id=DEPLOYER).response.json()["text"]
    everyone = bot.command("/deploy", "help", user_id="U0NOBODY").response.json()["text"]
    for usage in ("/deploy <env> [<version>]", "/deploy lock <env>", "/deploy unlock <env>"):
        assert usage in deployer and usage not in everyone
    for usage in ("/deploy status [<env>]", "/deploy history <env>", "/deploy help"):
        assert usage in deployer and usage in everyone


def test_a_lock_by_hand_holds_deploys_off_until_freed(bot: BotProcess) -> None:
    channel = new_channel()
    bot.command("/deploy", "lock staging incident 77 <!channel>", user_id=DEPLOYER, channel=channel)
    announced = bot.slack.wait_for(
        lambda fake: [m for m in fake.channel_messages(channel) if "locked staging" in text_of(m)]
    )
    assert "<!channel>" not in json.dumps(announced)
    reminder = bot.slack.wait_for(
        lambda fake: [
            m for m in fake.channel_messages("D0DEPLOY1") if "held staging" in text_of(m)
        ],
        timeout=30,
    )
    assert "/deploy unlock staging" in text_of(reminder[0])

    mark = responses_so_far(bot.slack)
    deploy(bot, "staging 6.0.0", user=OTHER_DEPLOYER)
    refusal = wait_for_response(
        bot.slack, "staging is held by hand by <@U0DEPLOY1> since", since=mark
    )
    assert "incident 77" in text_of(refusal)

    mark = responses_so_far(bot.slack)
    bot.command("/deploy", "unlock staging", user_id=OTHER_DEPLOYER, channel=channel)
    confirm = wait_for_response(bot.slack, "Free it anyway?", since=mark)
    value = buttons(confirm)["deploy_unlock_confirm"]
    bot.press(
        "deploy_unlock_confirm", value, channel=channel, message_ts="1.0", user_id=OTHER_DEPLOYER
    )
    freed = bot.slack.wait_for(
        lambda fake: [m for m in fake.channel_messages(channel) if "freed staging" in text_of(m)]
    )
    assert "<@U0DEPLOY2> freed staging, which <@U0DEPLOY1> held since" in text_of(freed[0])
    bot.slack.wait_for(
        lambda fake: [
            m for m in fake.channel_messages("D0DEPLOY1") if "freed staging" in text_of(m)
        ]
    )
    store = store_of(bot)
    try:
        assert store.environment_lock("staging") is None
    finally:
        store.close()


def test_status_history_and_a_dry_run(bot: BotProcess, targets: dict[str, DemoTarget]) -> None:
    channel = deploy(bot, "staging 7.0.0 --dry-run")
    final = final_deploy(bot.slack, channel)
    assert final["text"].startswith("Dry run of v7.0.0 to staging on 1 host: nothing was")
    commands = wait_in_thread(bot.slack, channel, final["ts"], "the exact commands")
    assert targets["staging"].supervise("restart") in text_of(commands).replace("&amp;", "&")
    assert "7.0.0" not in json.dumps(targets["staging"].current_files())

    mark = responses_so_far(bot.slack)
    bot.command("/deploy", "history staging", user_id="U0NOBODY")
    history = wait_for_response(bot.slack, "Deploy history · staging", since=mark)
    text = text_of(history)
    assert "*v1.0.1* by <@U0DEPLOY1>" in text and "`--skip-tests`" in text
    assert "rolled back" in text  # the -broken one

    mark = responses_so_far(bot.slack)
    bot.command("/deploy", "status", user_id="U0NOBODY")
    status = wait_for_response(bot.slack, "Deploy status · all environments", since=mark)
    assert "*Running now:* nothing" in text_of(status)


def test_a_failure_in_the_watch_offers_a_roll_back_that_works(
    bot: BotProcess, targets: dict[str, DemoTarget]
) -> None:
    qa = targets["qa"]
    final_deploy(bot.slack, deploy(bot, "qa 8.0.0 --skip-tests"))
    channel = deploy(bot, "qa 8.0.1 --skip-tests")
    final = final_deploy(bot.slack, channel)
    assert final["text"].startswith("Deployed v8.0.1 to qa")
    wait_in_thread(bot.slack, channel, final["ts"], "Watching qa's health")
    httpx.post(f"{qa.url}/admin/faults", json={"healthz_status": 500}, timeout=5)
    alarm = wait_in_thread(bot.slack, channel, final["ts"], "qa is unhealthy after the deploy")
    deployment_id = buttons(alarm)["deploy_rollback"]
    mark = responses_so_far(bot.slack)
    bot.press(
        "deploy_rollback",
        deployment_id,
        channel=channel,
        message_ts=alarm["ts"],
        user_id="U0NOBODY",
    )
    wait_for_response(bot.slack, "Only deployers (access.deployers) may roll back.", since=mark)
    bot.press(
        "deploy_rollback", deployment_id, channel=channel, message_ts=alarm["ts"], user_id=DEPLOYER
    )
    rolled = final_deploy(bot.slack, channel, index=1)
    assert rolled["text"] == "Rolled back qa from v8.0.1 to v8.0.0.", text_of(rolled)
    assert healthz(qa) == {"status": "healthy", "version": "8.0.0"}
    lines = [json.loads(x) for x in (qa.install_dir / "releases.log").read_text().splitlines()]
    assert lines[-1]["event"] == "bad" and lines[-1]["release"].endswith("-8.0.1")
    assert thread(bot.slack, channel, final["ts"])  # the watch's messages stayed in the thread


def test_a_red_ci_stops_the_deploy_and_status_lists_the_last_runs(
    bot: BotProcess, github: GitHubFake, targets: dict[str, DemoTarget]
) -> None:
    github.set_runs(run(12, "failure", sha="feedface00"), run(11, "success"), run(10, "success"))
    try:
        channel = deploy(bot, "staging 9.0.0")
        final = final_deploy(bot.slack, channel)
        assert final["text"].startswith(
            "Deploy of v9.0.0 to staging failed at Checklist: CI: CI is not green: the latest "
            "ci.yml run on main (feedfac) ended: failure"
        ), text_of(final)
        assert "9.0.0" not in json.dumps(targets["staging"].current_files())

        mark = responses_so_far(bot.slack)
        bot.command("/deploy", "status staging", user_id="U0NOBODY")
        status = text_of(wait_for_response(bot.slack, "Deploy status · staging", since=mark))
        assert "CI: last 3 runs of ci.yml on main" in status
        assert ":x: <https://github.example/eventmesh/eventmesh/actions/runs/12|CI>" in status
        assert github.requests[-1].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
        assert GITHUB_TOKEN not in json.dumps(bot.slack.summary())
    finally:
        github.set_runs(run(1, "success"))
