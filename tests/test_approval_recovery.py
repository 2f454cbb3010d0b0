"""An approved request is not lost when the bot dies between the decision and the start: the
next bot starts it at start-up, once, deploying the package the approver approved."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.store import AlreadyStarted, Store
from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEST_LIMITS,
    BotProcess,
    bot_database_url,
    new_channel,
    start_bot,
    stop_process,
)
from tests.support.approvals import APPROVER, DEPLOYER
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import final_deploy, text_of
from tests.support.slack_fake import SlackFake


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "dev")
    yield target
    target.stop()


def approval_request(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    return next(
        (m for m in fake.channel_messages(channel) if "Approval needed" in text_of(m)), None
    )


def test_a_request_approved_just_before_the_bot_died_is_started_once_after_restart(
    tmp_path: Path, slack: SlackFake, dev: DemoTarget
) -> None:
    approvals = new_channel()
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                # Its own: the session's fake holds other tests' requests too.
                "slack": {"approvals_channel": approvals},
                "access": {"deployers": [DEPLOYER], "approvers": [APPROVER]},
                "alerts": {"scheduled_checks": False},
                "limits": TEST_LIMITS,
                "environments": {
                    "dev": dev.environment(requires_approval=True, approval_timeout="30m")
                },
            }
        )
    )
    database_url = bot_database_url(tmp_path)
    variables = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "EVENTMESH_CONFIG": str(config),
        "EVENTMESH_DATABASE_URL": database_url,
        "EVENTMESH_DATA_DIR": str(tmp_path / "data"),  # one bot, restarted
    }
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    process, url, log = start_bot(first_dir, **variables)
    first = BotProcess(url, process, log, database_url, slack)
    try:
        channel = first.command("/deploy", "dev 1.0.0", user_id=DEPLOYER).channel
        slack.wait_for(lambda fake: approval_request(fake, approvals), timeout=90)
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()
    finally:
        first.http.close()
        stop_process(process)

    # What a press leaves when its bot dies right after deciding: the request approved (a
    # while ago), nothing started.
    decided_at = datetime.now(UTC) - timedelta(seconds=20)
    store = Store(database_url, clock=lambda: decided_at)
    try:
        approval = store.approval(1)
        assert approval is not None and approval.state == "pending"
        approved_sha256 = str(approval.payload["package"]["sha256"])  # type: ignore[index]
        assert store.decide_approval(approval.id, "approved", APPROVER)
        assert store.deployments("dev") == []
    finally:
        store.close()

    process, url, log = start_bot(second_dir, **variables)
    second = BotProcess(url, process, log, database_url, slack)
    try:
        final = final_deploy(slack, channel)
        assert final["text"].startswith("Deployed v1.0.0 to dev"), text_of(final)
        assert "approved by <@U0APPROVER1>" in text_of(final)
        assert "starting it" in log.read_text()

        package = dev.install_dir / "packages" / "eventmesh-1.0.0.tar.gz"
        assert hashlib.sha256(package.read_bytes()).hexdigest() == approved_sha256
        store = Store(database_url)
        try:
            (deployment,) = store.deployments("dev")
            assert (deployment.state, deployment.approved_by) == ("succeeded", APPROVER)
            assert store.approvals_not_started() == []
            # Its run key is taken: any later start of the request (another sweep, another
            # replica) records nothing.
            again = store.begin_deployment(
                kind="deploy",
                environment="dev",
                requested_by=DEPLOYER,
                version="1.0.0",
                options={},
                owner="test",
                approval_id=approval.id,
            )
            assert again == AlreadyStarted(approval.id)
            assert len(store.deployments("dev")) == 1
        finally:
            store.close()
    finally:
        second.http.close()
        code = stop_process(process)
        assert code == 0, log.read_text()
