"""The database going away under a running bot: a clear answer, nothing half-done, told.

PostgreSQL is reached through a proxy the test cuts (the machine's server serves other tests);
SQLite's file is deleted under the bot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from bot.store import Store, StoreError
from tests.conftest import (
    BotProcess,
    Sent,
    new_channel,
    start_slack_bot,
    stop_process,
    write_config,
)
from tests.support.incident_messages import actions_block_id, buttons
from tests.support.replicas import metric
from tests.support.slack_fake import SlackFake
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

UNREACHABLE = "database is unreachable, so nothing was done"
DEPLOYER = "U0DEPLOY1"
ONCALL = "U0ONCALL7"


def answer_to(slack: SlackFake, count_before: int) -> dict[str, Any]:
    """The next private answer (response_url) after count_before of them."""
    return slack.wait_for(
        lambda s: s.responses[count_before] if len(s.responses) > count_before else None,
        timeout=20,
    )


def outage_config(tmp_path: Path, staging_url: str, incidents: str) -> Path:
    return write_config(
        tmp_path / "eventmesh.yml",
        {"staging": staging_url},
        slack={"alerts_channel": new_channel(), "incidents_channel": incidents},
        escalation={
            "levels": [
                {"name": "On-call", "users": [ONCALL], "timeout": "30m"},
                {"name": "Lead", "users": ["U0LEAD7"]},
            ]
        },
    )


def test_postgres_gone_commands_and_presses_say_nothing_was_done(
    tmp_path: Path, slack: SlackFake, postgres_database: str, dead_url: str
) -> None:
    incidents = new_channel()
    config = outage_config(tmp_path, dead_url, incidents)
    target = make_url(postgres_database)
    with TcpProxy(target.port or 5432) as proxy:
        proxied = target.set(port=proxy.port).render_as_string(hide_password=False)
        bot = start_slack_bot(tmp_path, slack, config, proxied)
        try:
            run_the_outage(bot, slack, proxy, incidents, postgres_database)
        finally:
            bot.http.close()
            code = stop_process(bot.process)
    assert code == 0, bot.log.read_text()


def run_the_outage(
    bot: BotProcess, slack: SlackFake, proxy: TcpProxy, incidents: str, database_url: str
) -> None:
    pages_before = len(slack.channel_messages("D" + ONCALL[1:]))  # the session's fake
    bot.command("/escalate", "queue stuck --sev 2", channel=incidents)
    page = slack.wait_for(
        lambda s: next(
            (m for m in s.channel_messages("D" + ONCALL[1:])[pages_before:] if buttons(m)), None
        ),
        timeout=20,
    )

    proxy.cut()
    asked = len(slack.responses)
    assert bot.command("/escalate", "db down --sev 1").response.status_code == 200
    escalated = answer_to(slack, asked)
    assert UNREACHABLE in escalated["text"] and "internal error" not in escalated["text"]

    asked = len(slack.responses)
    assert (
        bot.command("/deploy", "lock staging freeze", user_id=DEPLOYER).response.status_code == 200
    )
    locked = answer_to(slack, asked)
    assert UNREACHABLE in locked["text"] and "/deploy" in locked["text"]

    asked = len(slack.responses)
    assert acknowledge(bot, page).response.status_code == 200
    acked = answer_to(slack, asked)
    assert "Your press was not recorded" in acked["text"], acked["text"]
    assert "Press the button again" in acked["text"]

    wait_until(
        "/metrics says the store is unreachable",
        lambda: metric(bot, "eventmesh_bot_store_reachable") == 0,
    )
    log = bot.log.read_text()
    assert "ERROR bot.store_watch: the store is unreachable" in log
    assert "EVENTMESH_DATABASE_URL" in log and "Traceback" not in log

    proxy.restore()
    wait_until(
        "/metrics says the store answers again",
        lambda: metric(bot, "eventmesh_bot_store_reachable") == 1,
    )
    # Nothing was half-done: no second incident, no lock, the incident not acknowledged.
    store = Store(database_url)
    try:
        (incident,) = store.unresolved_incidents()
        assert incident.acknowledged_by is None
        assert store.environment_locks() == []
    finally:
        store.close()
    # Pressed again, it is recorded.
    acknowledge(bot, page)
    store = Store(database_url)
    try:
        wait_until(
            "the acknowledgement recorded",
            lambda: store.unresolved_incidents()[0].acknowledged_by == ONCALL,
        )
    finally:
        store.close()


def acknowledge(bot: BotProcess, page: dict[str, Any]) -> Sent:
    """The on-call person presses Acknowledge on their page."""
    return bot.press(
        "incident_ack",
        "INC-1",
        channel="D" + ONCALL[1:],
        message_ts=page["ts"],
        user_id=ONCALL,
        block_id=actions_block_id(page) or "b1",
    )


def acknowledger(store: Store) -> str | None:
    (incident,) = store.unresolved_incidents()
    return incident.acknowledged_by


def test_sqlite_file_deleted_under_the_bot_is_reported_and_refused(
    tmp_path: Path, slack: SlackFake, dead_url: str
) -> None:
    config = write_config(tmp_path / "eventmesh.yml", {"staging": dead_url})
    database = tmp_path / "bot.db"
    bot = start_slack_bot(tmp_path, slack, config, f"sqlite:///{database}")
    try:
        database.unlink()
        asked = len(slack.responses)
        bot.command("/deploy", "lock staging freeze", user_id=DEPLOYER)
        answer = answer_to(slack, asked)
        assert UNREACHABLE in answer["text"]
        wait_until(
            "/metrics says the store is unreachable",
            lambda: metric(bot, "eventmesh_bot_store_reachable") == 0,
        )
        ready = bot.http.get(f"{bot.url}/readyz")  # not ready at once: no grace for the store
        assert ready.status_code == 503
        assert ready.json()["problems"][0].startswith("the store is unreachable: ")
        assert metric(bot, "eventmesh_bot_ready") == 0
        assert bot.http.get(f"{bot.url}/healthz").status_code == 200  # alive all the same
        log = bot.log.read_text()
        assert f"the SQLite database file {database} (EVENTMESH_DATABASE_URL) was deleted" in log
        assert "ERROR bot.store_watch: the store is unreachable" in log
    finally:
        bot.http.close()
        stop_process(bot.process)


def test_a_store_refuses_once_its_sqlite_file_is_deleted_and_opens_a_restored_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    store = Store(f"sqlite:///{path}")
    store.audit_start(user_id="U1", channel_id="C1", command="/health", text="")
    backup = path.read_bytes()
    path.unlink()
    assert store.problem() is not None and "was deleted" in (store.problem() or "")
    with pytest.raises(StoreError, match="was deleted while the bot ran"):
        store.audit_entries()
    path.write_bytes(backup)  # restored from a backup
    assert store.problem() is None
    assert [e.command for e in store.audit_entries()] == ["/health"]
    store.close()
