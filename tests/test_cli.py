"""Starting the bot wrong: each mistake exits 2 with a line that names the fix, no traceback."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.logs import REDACTED, RedactSecrets
from bot.settings import Settings, SettingsError
from tests.conftest import (
    BOT_TOKEN,
    EXAMPLE_CONFIG,
    REPO,
    SIGNING_SECRET,
    clean_env,
    free_port,
    start_bot,
    stop_process,
)
from tests.support.slack_fake import SlackFake


def run_bot(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
    )


def assert_one_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    for word in words:
        assert word in output, output


def test_broken_config_at_startup(tmp_path: Path) -> None:
    config = tmp_path / "eventmesh.yml"
    config.write_text(
        EXAMPLE_CONFIG.read_text().replace("connect_timeout: 10s", "connect_timeout: 10x")
    )
    result = run_bot(
        "run",
        EVENTMESH_CONFIG=str(config),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        EVENTMESH_DATA_DIR=str(tmp_path),
    )
    assert_one_clear_error(result, "ERROR", "ssh.connect_timeout", "'10x' is not a duration")
    assert len([line for line in result.stderr.splitlines() if "ERROR" in line]) == 1


def test_every_config_problem_at_startup_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "eventmesh.yml"
    text = EXAMPLE_CONFIG.read_text()
    for wrong, right in [
        ("connect_timeout: 10s", "connect_timeout: 10x"),
        ("keep_backups: 10", "keep_backups: ten"),
        ("  breaches_to_fire: 2", "  shout: true\n  breaches_to_fire: 2"),
    ]:
        assert wrong in text, wrong
        text = text.replace(wrong, right)
    config.write_text(text)
    result = run_bot(
        "run",
        EVENTMESH_CONFIG=str(config),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        EVENTMESH_DATA_DIR=str(tmp_path),
    )
    assert_one_clear_error(result, "ssh.connect_timeout", "deploy.keep_backups", "alerts.shout")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert all("ERROR" in line and str(config) in line for line in lines), result.stderr


def test_no_tokens_and_no_terminal_is_an_error_not_a_clean_stop(tmp_path: Path) -> None:
    # How an orchestrator starts the image when a secret is missing: no terminal on stdin.
    # The console would read end-of-file and exit 0, and the missing secret look like a stop.
    result = run_bot("run", EVENTMESH_DATA_DIR=str(tmp_path), PORT=str(free_port()))
    assert_one_clear_error(
        result, "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "--mode console"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("stdin", ["end-of-file", "closed"])
def test_forced_console_without_a_terminal_still_runs(tmp_path: Path, stdin: str) -> None:
    # stdin at end-of-file (/dev/null), or not open at all (Python's sys.stdin is None).
    command = [sys.executable, "-m", "bot.cli", "--mode", "console"]
    if stdin == "closed":
        command = ["sh", "-c", 'exec "$@" <&-', "sh", *command]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=clean_env(EVENTMESH_DATA_DIR=str(tmp_path), PORT=str(free_port())),
        stdin=subprocess.DEVNULL if stdin == "end-of-file" else None,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local console" in result.stdout
    assert "Traceback" not in result.stderr


def test_http_mode_without_signing_secret() -> None:
    result = run_bot("run", "--mode", "http", SLACK_BOT_TOKEN=BOT_TOKEN)
    assert_one_clear_error(result, "SLACK_SIGNING_SECRET")


def test_socket_mode_without_app_token() -> None:
    result = run_bot("--mode", "socket", SLACK_BOT_TOKEN=BOT_TOKEN)
    assert_one_clear_error(result, "SLACK_APP_TOKEN")


def test_bad_port_value() -> None:
    assert_one_clear_error(run_bot("run", PORT="eighty"), "PORT", "not a port number")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_bot(
            "run",
            EVENTMESH_CONFIG=str(EXAMPLE_CONFIG),
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            PORT=str(port),
            EVENTMESH_DATA_DIR=str(tmp_path),
        )
    assert_one_clear_error(result, f"127.0.0.1:{port}", "set PORT")


def test_unreachable_database_hides_its_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://eventmesh:hunter2secret@127.0.0.1:{free_port()}/bot"
    result = run_bot(
        "run",
        EVENTMESH_CONFIG=str(EXAMPLE_CONFIG),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        EVENTMESH_DATABASE_URL=url,
        PORT=str(free_port()),
    )
    assert_one_clear_error(result, "EVENTMESH_DATABASE_URL", "127.0.0.1")
    assert "hunter2secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        (
            {"SLACK_BOT_TOKEN": "xoxb-revoked", "SLACK_SIGNING_SECRET": SIGNING_SECRET},
            "SLACK_BOT_TOKEN",
        ),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-wrong"}, "SLACK_APP_TOKEN"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-revoked", "SLACK_APP_TOKEN": "xapp-test-token"},
            "SLACK_BOT_TOKEN",
        ),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": BOT_TOKEN}, "SLACK_APP_TOKEN"),
    ],
    ids=[
        "bad-bot-token",
        "bad-app-token",
        "bad-bot-token-in-socket-mode",
        "bot-token-as-app-token",
    ],
)
def test_a_token_slack_refuses_stops_the_start(
    tmp_path: Path, slack: SlackFake, variables: dict[str, str], named: str
) -> None:
    # Without this check the bot would report healthy and fail every command (or, in Socket
    # Mode, retry the connection forever).
    result = run_bot(
        "run",
        EVENTMESH_CONFIG=str(EXAMPLE_CONFIG),
        SLACK_API_URL=slack.api_url,
        EVENTMESH_DATA_DIR=str(tmp_path),
        PORT=str(free_port()),
        **variables,
    )
    assert_one_clear_error(result, "ERROR", f"Slack refused {named}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no warnings after it
    assert "xapp-wrong" not in result.stderr and "xoxb-revoked" not in result.stderr


def test_oauth_variables_are_ignored_not_obeyed(tmp_path: Path, bot_config: Path) -> None:
    # Bolt would silently switch to the OAuth install flow and refuse our bot token.
    process, _, log = start_bot(
        tmp_path,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_CLIENT_ID="123.456",
        SLACK_CLIENT_SECRET="oauth-secret-value",
        EVENTMESH_CONFIG=str(bot_config),
    )
    assert stop_process(process) == 0
    text = log.read_text()
    assert "SLACK_CLIENT_ID is set but ignored" in text
    assert "oauth-secret-value" not in text


@pytest.mark.parametrize(
    ("env", "forced", "mode"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, None, "socket"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, None, "http"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "x", "SLACK_SIGNING_SECRET": "s"},
            None,
            "socket",
        ),
        ({}, None, "console"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, None, "console"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "x", "SLACK_SIGNING_SECRET": "s"},
            "http",
            "http",
        ),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, "console", "console"),
    ],
)
def test_mode_follows_the_environment(env: dict[str, str], forced: str | None, mode: str) -> None:
    assert Settings.from_env(env).mode(forced) == mode  # type: ignore[arg-type]


def test_no_tokens_without_a_terminal_is_an_error_unless_the_console_is_forced() -> None:
    with pytest.raises(SettingsError, match=r"SLACK_BOT_TOKEN.*SLACK_APP_TOKEN"):
        Settings.from_env({}).mode(None, interactive=False)
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET"):
        Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1"}).mode(None, interactive=False)
    assert Settings.from_env({}).mode("console", interactive=False) == "console"
    tokens = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
    assert Settings.from_env(tokens).mode(None, interactive=False) == "http"


def test_forced_mode_without_its_tokens_is_an_error() -> None:
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN"):
        Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1"}).mode("socket")


def test_secrets_are_redacted_from_log_lines_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(["xoxb-very-secret", "signing-secret-xyz"]))
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    try:
        logger.warning("token %s in args", "xoxb-very-secret")
        try:
            raise RuntimeError("failed with signing-secret-xyz")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "xoxb-very-secret" not in text and "signing-secret-xyz" not in text
    assert text.count(REDACTED) == 3  # the argument, the quoted source line, the message
    assert "Traceback" in text  # redacted, not dropped
