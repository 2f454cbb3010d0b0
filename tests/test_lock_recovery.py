"""A lock never outlives its run: `/deploy unlock <env> --force` lets an approver free the lock of
a run nothing runs any more — after a confirmation, announced — and refuses while it is alive,
or for anyone but an approver."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import psutil

from bot.store import Deployment, Store
from tests.conftest import http_bot, write_config
from tests.support.conversation import Conversation
from tests.support.slack_fake import SlackFake
from tests.support.waiting import wait_until

APPROVER, DEPLOYER = "U0APPROVER1", "U0DEPLOY1"
# A bot on another machine: only its heartbeat says whether it lives.
ELSEWHERE = "bot-elsewhere:4242:1700000000000"


def _this_test_process() -> str:
    started = int(psutil.Process().create_time() * 1000)
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


def _running(store: Store, env: str, owner: str, *, beat_ago: timedelta) -> Deployment:
    began = store.begin_deployment(
        kind="deploy",
        environment=env,
        requested_by=DEPLOYER,
        version="1.0.0",
        options={},
        owner=owner,
    )
    assert isinstance(began, Deployment)
    store.update_deployment(began.id, heartbeat_at=store.clock() - beat_ago)
    return began


def test_an_approver_frees_the_lock_of_a_dead_run_and_only_then(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = write_config(tmp_path / "eventmesh.yml", {"dev": dead_url, "staging": dead_url})
    with http_bot(tmp_path, slack, config) as bot:
        store = Store(bot.database_url)
        try:
            # The start-up sweep ends a dead run by itself; once it has, the next is 30 s away.
            crashed = _running(store, "staging", ELSEWHERE, beat_ago=timedelta(minutes=5))
            wait_until(
                "the crashed run marked interrupted",
                lambda: store.deployment(crashed.id).state == "interrupted",
                timeout=60,
            )

            alive = _running(store, "staging", _this_test_process(), beat_ago=timedelta(0))
            dead = _running(store, "dev", ELSEWHERE, beat_ago=timedelta(minutes=5))
            chat = Conversation(bot)

            refused = chat.as_(DEPLOYER).say("/deploy unlock dev --force").answer
            assert refused["response_type"] == "ephemeral"
            assert "Only approvers may run /deploy unlock dev --force" in refused["text"]
            assert "(access.approvers in the config)" in refused["text"]

            live = chat.as_(APPROVER).say("/deploy unlock staging --force")
            said = live.private("is alive")
            assert f"Deploy #{alive.id} on staging is alive" in said.text
            assert "Cancel" in said.text
            assert store.environment_lock("staging") is not None

            asking = chat.as_(APPROVER).say("/deploy unlock dev --force")
            confirm = asking.private("nothing runs it any more")
            assert f"deploy #{dead.id}" in confirm.text
            assert store.environment_lock("dev") is not None  # not before the confirmation
            freeing = confirm.press("Free it", as_=APPROVER)
            announced = freeing.message("freed dev by force")
            assert f"<@{APPROVER}> freed dev by force: deploy #{dead.id}" in announced.text
            assert store.environment_lock("dev") is None
            ended = store.deployment(dead.id)
            assert ended is not None and ended.state == "interrupted"
            assert f"<@{APPROVER}> freed the lock by hand" in ended.summary
            assert store.deployment(alive.id).state == "running"
            store.finish_deployment(alive.id, "failed", "ended by the test")
        finally:
            store.close()
