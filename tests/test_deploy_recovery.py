"""A bot killed mid-deploy: the next one says the deploy was interrupted and frees its lock."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import final_deploy, text_of, wait_in_thread
from tests.support.slack_fake import SlackFake
from tests.support.waiting import wait_until


def building_in(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    return next(
        (
            m
            for m in fake.channel_messages(channel)
            if ":hourglass_flowing_sand: *Build*" in text_of(m)
        ),
        None,
    )


def builds_waiting_on(gate: Path) -> list[psutil.Process]:
    """Processes still running the build command (`cat <gate>`)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(gate) in " ".join(process.info["cmdline"] or []):
                found.append(process)
    return found


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DemoTarget]:
    target = demo_target(tmp_path, "dev")
    yield target
    target.stop()


def test_a_bot_killed_mid_deploy_reports_it_interrupted_and_frees_the_lock(
    tmp_path: Path, slack: SlackFake, dev: DemoTarget
) -> None:
    gate = dev.root / "build-gate"
    os.mkfifo(gate)
    env = dev.environment()
    env["build"] = f"cat {gate} > /dev/null && {env['build']}"
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        json.dumps(
            {
                "access": {"deployers": ["U0DEPLOY1"], "approvers": ["U0APPROVER1"]},
                "alerts": {"scheduled_checks": False},  # this test is about commands, not alerts
                "limits": TEST_LIMITS,  # a robot's limits (conftest.py)
                "environments": {"dev": env, "qa": dev.environment()},
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
        # One data dir for both, as a restarted bot has: the second finds the first's builds.
        "EVENTMESH_DATA_DIR": str(tmp_path / "data"),
    }
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    process, url, log = start_bot(first_dir, **variables)
    first = BotProcess(url, process, log, database_url, slack)
    try:
        channel = first.command("/deploy", "dev 1.0.0", user_id="U0DEPLOY1").channel
        first.command("/deploy", "lock qa freeze for the audit", user_id="U0DEPLOY1")

        message = slack.wait_for(lambda fake: building_in(fake, channel), timeout=60)
        store = Store(database_url)
        try:
            slack.wait_for(lambda _: store.environment_lock("qa") is not None)
        finally:
            store.close()
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()
    finally:
        first.http.close()
        stop_process(process)

    process, url, log = start_bot(second_dir, **variables)
    second = BotProcess(url, process, log, database_url, slack)
    try:
        note = wait_in_thread(slack, channel, message["ts"], "was interrupted")
        assert "during *Build*" in text_of(note)
        assert "The lock on dev is released" in text_of(note)
        updated = final_deploy(slack, channel)
        assert ":warning:" in text_of(updated) and "interrupted during Build" in updated["text"]

        store = Store(database_url)
        try:
            (deployment,) = store.deployments("dev")
            assert deployment.state == "interrupted"
            assert store.environment_lock("dev") is None
            held = store.environment_lock("qa")  # taken by hand: not the crash's to free
            assert held is not None and held.reason == "freeze for the audit"
        finally:
            store.close()

        # SIGKILL left the killed bot's build running on its own (in a process group of its
        # own, still reading the gate): the restarted bot killed it and removed its workspace.
        workspaces = tmp_path / "data" / "workspaces"
        wait_until(
            "the killed build's workspace removed",
            lambda: not [p for p in workspaces.iterdir() if p.name.startswith("dev-")],
        )
        wait_until("no build left waiting on the gate", lambda: not builds_waiting_on(gate))
        assert not (dev.workdir / "build").exists()  # builds never write into workdir

        # The environment is free again: a new deploy starts (and finishes) normally.
        again = second.command("/deploy", "dev 1.0.1 --skip-tests", user_id="U0DEPLOY1").channel
        slack.wait_for(lambda fake: building_in(fake, again), timeout=60)
        with gate.open("w") as writer:
            writer.write("go\n")
        assert final_deploy(slack, again)["text"].startswith("Deployed v1.0.1 to dev")
    finally:
        second.http.close()
        code = stop_process(process)
        assert code == 0, log.read_text()
