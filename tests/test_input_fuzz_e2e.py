"""Arbitrary text into every command and every button of the real bot, through its real HTTP
endpoint (signed as Slack signs): each is answered (HTTP 200 within Slack's 3 s), nothing
escapes as a traceback, and every command a transport was asked to run — the local transport
and SSH log each one at DEBUG, before running it (bot/transport/base.py `log_command`) — is
made of config values and validated tokens only.

The text is hypothesis's (derandomized, so CI sees the same examples each run): unicode, shell
metacharacters, `$(…)`, backticks, newlines, NUL, 5,000 characters, and the same after a valid
start ("local logs matching …", "lock local …") so that the parsers' deeper paths are reached.
Three people send them: one with no role, a deployer and an approver.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Config
from bot.runbook.changes.releases import is_version
from handlers import ACTIONS, COMMANDS
from tests.conftest import TEST_LIMITS, BotProcess, DemoService, http_bot
from tests.support.health_reports import SLACK_ACK_DEADLINE_S
from tests.support.slack_fake import SlackFake

USERS = ("U0USER", "U0DEPLOY1", "U0APPROVER1")
HOSTILE = (
    "$(touch /tmp/eventmesh-fuzz-pwned)",
    "`touch /tmp/eventmesh-fuzz-pwned`",
    "; touch /tmp/eventmesh-fuzz-pwned",
    "| sh -c id",
    "&& reboot",
    "../../etc/passwd",
    "line one\nline two",
    "nul\x00byte",
    "x" * 5000,
    "<!channel> <@U0CTO> <#C0OPS>",
    "ünïcödé ✓ 🚀 \u202e",
    "'\"\\",
    "--sev 1 --sev 2",
)
# Valid beginnings: what follows them is arbitrary.
STARTS = (
    "",
    "local ",
    "local 1.2.3 ",
    "staging ",
    "production ",
    "local logs ",
    "local logs errors 5 matching ",
    "staging logs matching ",
    "local diagnose ",
    "staging resources ",
    "local watch ",
    "list local ",
    "list staging ",
    "backup local ",
    "lock local ",
    "unlock local ",
    "status ",
    "history local ",
    "report ",
    "override ",
    "override cancel ",
    "ack INC-",
    "resolve ",
    "help ",
)
TEXTS = st.one_of(
    st.text(max_size=80),
    st.sampled_from(HOSTILE),
    st.builds(lambda start, rest: start + rest, st.sampled_from(STARTS), st.text(max_size=40)),
    st.builds(lambda start, rest: start + rest, st.sampled_from(STARTS), st.sampled_from(HOSTILE)),
)
VERSIONS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
RELEASE_IDS = st.from_regex(r"20[0-9]{6}T[0-9]{6}Z-[A-Za-z0-9._-]{1,20}", fullmatch=True)


def after(start: str, rest: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda tail: start + tail, rest)


# Whole, valid commands whose free part (a version, an id, a reason, a text to look for, a
# summary) is arbitrary: these reach the procedures and the transports.
VALID = {
    "/health": st.one_of(
        after("local logs matching ", st.text(min_size=1, max_size=100)),
        after("staging logs errors 5 matching ", st.sampled_from(HOSTILE[:7])),
        st.sampled_from(
            [
                "local",
                "all",
                "local diagnose",
                "staging diagnose",
                "local resources",
                "staging resources",
                "local logs warnings 3",
                "local watch 3s",
                "report 3",
            ]
        ),
    ),
    "/deploy": st.one_of(
        after("local ", VERSIONS),
        after("staging ", VERSIONS),
        after("production ", VERSIONS),
        # staging, not local: a lock by hand on local would refuse every deploy after it
        after("lock staging ", st.text(max_size=150)),
        st.sampled_from(["local --dry-run", "unlock staging", "status", "history local"]),
    ),
    "/rollback": st.one_of(
        after("local ", RELEASE_IDS),
        after("staging ", RELEASE_IDS),
        st.sampled_from(["list local", "list staging", "backup local", "local"]),
    ),
    "/escalate": st.text(min_size=1, max_size=120),
    "/oncall": st.one_of(
        st.text(max_size=40), after("override <@U0DEPLOY1> for ", st.text(max_size=10))
    ),
}
COMMAND_NAMES = [spec.name for spec in COMMANDS]
COMMAND_TEXTS = st.sampled_from(COMMAND_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(TEXTS, VALID[name]))
)
VALID_TEXTS = st.sampled_from(COMMAND_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), VALID[name])
)
ACTION_IDS = [spec.action_id for spec in ACTIONS]
FUZZ = settings(
    max_examples=90,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SAFE = re.compile(r"[A-Za-z0-9._-]*")


@pytest.fixture
def fuzzed_bot(
    tmp_path: Path, slack: SlackFake, demo_services: tuple[DemoService, ...]
) -> Iterator[tuple[BotProcess, Path]]:
    tmp = tmp_path
    work = tmp / "work"
    work.mkdir()
    (work / "artifact.bin").write_text("built\n")
    unreachable = "deploy@127.0.0.1:1"
    local = {
        "base_url": demo_services[0].url,
        "transport": "local",
        "workdir": str(work),
        "build": "true",
        "test": "true",
        "version": "echo 1.0.0",
        "artifacts": ["artifact.bin"],
        "install_dir": str(tmp / "install"),
        "backup_dir": str(tmp / "backups"),
        "start": "true",
        "stop": "true",
        "restart": "true",
        "verify_interval": "1s",
        "verify_timeout": "3s",
        "watch_for": "1s",
        "log_file": str(tmp / "api.log"),
        "process": "no-such-service-process",
    }
    config = {
        "slack": {
            "alerts_channel": "C0ALERTS",
            "approvals_channel": "C0APPROVALS",
            "incidents_channel": "C0INCIDENTS",
        },
        "access": {"deployers": ["U0DEPLOY1"], "approvers": ["U0APPROVER1"]},
        "ssh": {"key_file": str(tmp / "no-key"), "connect_timeout": "2s"},
        "environments": {
            "local": local,
            "staging": {"base_url": demo_services[0].url, "hosts": [unreachable]},
            "production": {
                "base_url": demo_services[1].url,
                "hosts": [unreachable],
                "requires_approval": True,
            },
        },
        "escalation": {"levels": [{"name": "On-call", "users": ["U0ONCALL"], "timeout": "1h"}]},
        "alerts": {"scheduled_checks": False},
        "limits": TEST_LIMITS,
    }
    path = tmp / "eventmesh.yml"
    path.write_text(json.dumps(config))
    with http_bot(tmp, slack, path, LOG_LEVEL="DEBUG") as bot:
        yield bot, path


def answered(bot: BotProcess, sent: object) -> None:
    response, seconds = sent.response, sent.seconds  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text[:200]
    assert seconds < SLACK_ACK_DEADLINE_S


def fuzz(bot: BotProcess, sent_texts: list[str]) -> None:
    """Three runs of examples against the bot; `sent_texts` gets everything sent."""

    @FUZZ
    @given(typed=COMMAND_TEXTS, user=st.sampled_from(USERS))
    def any_command(typed: tuple[str, str], user: str) -> None:
        command, text = typed
        sent_texts.append(text)
        answered(bot, bot.command(command, text, user_id=user))

    # The paths that reach the transports: a deploy of any valid version, a rollback to any
    # well-formed id, the text a log search looks for, a lock's reason.
    @settings(FUZZ, max_examples=60)
    @given(typed=VALID_TEXTS)
    def valid_command_as_a_deployer(typed: tuple[str, str]) -> None:
        command, text = typed
        sent_texts.append(text)
        answered(bot, bot.command(command, text, user_id="U0DEPLOY1"))

    @FUZZ
    @given(
        action_id=st.sampled_from(ACTION_IDS),
        value=TEXTS,
        block_id=st.one_of(st.just("b1"), st.text(max_size=30)),
        user=st.sampled_from(USERS),
    )
    def any_button(action_id: str, value: str, block_id: str, user: str) -> None:
        sent_texts.extend([value, block_id])
        pressed = bot.press(
            action_id, value, channel="C0FUZZ", message_ts="1.0", user_id=user, block_id=block_id
        )
        answered(bot, pressed)

    any_command()
    valid_command_as_a_deployer()
    any_button()


def commands_run(log: str) -> list[dict[str, object]]:
    marker = "bot.transport.commands: runs "
    return [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line]


def typed_fragments(texts: list[str], config_text: str) -> set[str]:
    """Pieces of what was typed that no validated token can be: words with a character
    outside [A-Za-z0-9._-] (3 or more characters, and not in the config file)."""
    words = {w for text in texts for w in re.split(r"[\s\x00]+", text)}
    return {w for w in words if len(w) >= 3 and not SAFE.fullmatch(w) and w not in config_text}


def built_from_config(record: dict[str, object], config_commands: set[str]) -> bool:
    """A shell command is a config command (with the deploy's validated exports before it),
    or one of the bot's own probe scripts (marked @@eventmesh-…); an argv is any list."""
    if "argv" in record:
        return True
    text = str(record["shell"])
    if "@@eventmesh-" in text:
        return True
    exports = re.fullmatch(r"export ((?:EVENTMESH_[A-Z_]+=\S+ ?)+); (.*)", text, re.DOTALL)
    if exports is None:
        return text in config_commands
    for assignment in exports[1].split():
        name, _, value = assignment.partition("=")
        if name == "EVENTMESH_VERSION" and not is_version(value):
            return False
    return exports[2] in config_commands


def test_any_command_or_press_is_answered_and_runs_only_config_and_validated_tokens(
    fuzzed_bot: tuple[BotProcess, Path],
) -> None:
    bot, config_path = fuzzed_bot
    sent_texts: list[str] = []
    fuzz(bot, sent_texts)  # each example: HTTP 200 within 3 s
    assert len(sent_texts) >= 240
    log = bot.log.read_text()
    assert "Traceback" not in log
    # Every environment's commands as the config resolves them (a production request builds,
    # tests and packages before it is asked: its build and test run too).
    config = Config.model_validate(json.loads(config_path.read_text()))
    config_commands = {
        getattr(env.deploy, key)
        for env in config.environments.values()
        for key in ("build", "test", "version", "start", "stop", "restart")
    }
    ran = commands_run(log)
    assert ran, "some commands reached a transport (logs, diagnose, resources, a deploy)"
    fragments = typed_fragments(sent_texts, config_path.read_text())
    assert fragments  # the hostile pieces were sent
    for record in ran:
        assert built_from_config(record, config_commands), record
        words = record.get("argv") or [record["shell"]]
        shown = json.dumps(words, ensure_ascii=False)
        leaked = [f for f in fragments if f in shown or json.dumps(f)[1:-1] in shown]
        assert leaked == [], (record, leaked)
    assert not Path("/tmp/eventmesh-fuzz-pwned").exists()
