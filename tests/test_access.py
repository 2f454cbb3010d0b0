"""Who may do what: the one policy (bot/slack/access.py), its table in the README, and the
parts the dispatcher leans on (usage matching, the roles with the store's overrides)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.config import Config, load_config
from bot.slack.access import Policy, Usage, policy_rows, refusal, usage_for
from bot.store import Store
from bot.store.oncall import OnCallStore
from handlers import ACTIONS, COMMANDS
from tests.conftest import EXAMPLE_CONFIG, REPO

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def rotation_config(tmp_path: Path) -> Config:
    text = EXAMPLE_CONFIG.read_text().replace(
        "    - {name: On-call DevOps Engineer, users: [U0ONCALL], timeout: 10m}",
        "    - name: On-call DevOps Engineer\n"
        "      rotation: {members: [U0ALICE, U0BOB], every: 1w, handoff: '2026-12-07T09:00:00Z'}\n"
        "      timeout: 10m",
    )
    path = tmp_path / "eventmesh.yml"
    path.write_text(text)
    return load_config(path)


def test_every_button_and_every_command_line_says_who_may() -> None:
    assert ACTIONS and all(spec.allow.role for spec in ACTIONS)
    rows = policy_rows(
        [(spec.name, spec.usage) for spec in COMMANDS],
        [(spec.action_id, spec.button, spec.allow) for spec in ACTIONS],
    )
    assert len(rows) == sum(len(s.usage) for s in COMMANDS) - len(COMMANDS) + len(ACTIONS)
    by_button = {spec.action_id: spec.allow for spec in ACTIONS}
    for alert_button in ("alert_ack", "alert_silence", "alert_escalate", "watch_stop"):
        assert by_button[alert_button].role == "responders"
    assert by_button["approval_approve"].role == "approvers"
    assert by_button["deploy_cancel"].owner is not None  # its requester too


def test_the_readme_table_is_the_policy() -> None:
    readme = (REPO / "README.md").read_text()
    rows = policy_rows(
        [(spec.name, spec.usage) for spec in COMMANDS],
        [(spec.action_id, spec.button, spec.allow) for spec in ACTIONS],
    )
    for what, who, then in rows:
        assert f"| {what} | {who} | {then} |" in readme, f"README lacks the row for {what}"


def test_a_request_is_matched_to_its_usage_line() -> None:
    config = load_config(EXAMPLE_CONFIG)
    usages = next(spec.usage for spec in COMMANDS if spec.name == "/deploy")

    def found(text: str) -> tuple[str, str] | None:
        match = usage_for(usages, text, config)
        return None if match is None else (match[0].role, match[1])

    assert found("staging 1.2.3 --dry-run") == ("deployers", "/deploy staging")
    assert found("STATUS") == ("everyone", "/deploy status")
    assert found("lock production freeze for the audit") == ("deployers", "/deploy lock production")
    assert found("nosuchenv") is None  # the handler answers with the usage
    assert found("$(reboot)") is None
    oncall = next(spec.usage for spec in COMMANDS if spec.name == "/oncall")
    match = usage_for(oncall, "override <@U0X|x> for 8h", config)
    assert match is not None and match[1] == "/oncall override <@user>"  # never the user's words
    assert usage_for([Usage("/x <env> go", "")], "staging stop", config) is None


def test_refusals_name_the_role_and_where_it_comes_from() -> None:
    assert refusal("deployers", "run /deploy staging") == (
        "Only deployers may run /deploy staging.",
        "(access.deployers in the config)",
    )
    reason, hint = refusal("responders", "press Stop", "whoever started it")
    assert reason == "Only responders or whoever started it may press Stop."
    assert "escalation path" in hint


def test_responders_are_roles_path_rotation_members_and_overrides(tmp_path: Path) -> None:
    config = rotation_config(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    overrides = OnCallStore(store)
    policy = Policy(config, overrides, clock=lambda: T0)

    async def holds(user: str) -> bool:
        return await policy.holds("responders", user)

    for user in ("U0DEPLOY1", "U0APPROVER2", "U0LEAD", "U0CTO", "U0ALICE", "U0BOB"):
        assert asyncio.run(holds(user)), user
    assert not asyncio.run(holds("U0USER"))
    overrides.add_override(
        "On-call DevOps Engineer", "U0OLGA", T0 - timedelta(hours=1), T0 + timedelta(hours=1), "x"
    )
    overrides.add_override(
        "On-call DevOps Engineer", "U0PAST", T0 - timedelta(hours=3), T0 - timedelta(hours=2), "x"
    )
    assert asyncio.run(holds("U0OLGA"))
    assert not asyncio.run(holds("U0PAST"))  # an override over is over
    assert not policy.named("responders", "U0OLGA")  # the config alone does not say so
    assert asyncio.run(policy.holds("everyone", "U0USER"))
    assert not asyncio.run(policy.holds("approvers", "U0DEPLOY1"))
