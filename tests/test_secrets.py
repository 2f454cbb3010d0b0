"""Secrets: given as files, taken out of the environment, out of children's reach, and out of
/proc for other processes of the same user."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import (
    PR_SET_DUMPABLE,
    SECRETS,
    Settings,
    SettingsError,
    make_non_dumpable,
    read_ci_token,
    read_secret,
    scrub_secrets,
)
from bot.transport.base import Shell
from bot.transport.local import LocalTransport, child_environment

NOBODY = 65534


def test_a_secret_may_come_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "slack_bot_token"
    token.write_text("xoxb-from-a-file\n")
    url = tmp_path / "db_url"
    url.write_text("postgresql+psycopg://bot:pa55word@db/bot")
    settings = Settings.from_env(
        {
            "SLACK_BOT_TOKEN_FILE": str(token),
            "SLACK_SIGNING_SECRET": "signing",
            "EVENTMESH_DATABASE_URL_FILE": str(url),
        }
    )
    assert settings.bot_token == "xoxb-from-a-file"
    assert settings.database_url == "postgresql+psycopg://bot:pa55word@db/bot"
    assert settings.mode(None, interactive=False) == "http"
    assert "pa55word" in settings.secrets()  # the password alone is redacted too


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"SLACK_APP_TOKEN": "xapp-1", "SLACK_APP_TOKEN_FILE": "/x"}, "both set"),
        ({"SLACK_APP_TOKEN_FILE": "/no/such/file"}, "cannot read it"),
        ({"SLACK_APP_TOKEN_FILE": "EMPTY"}, "empty"),
    ],
)
def test_a_secret_file_that_cannot_be_used_names_the_variable(
    tmp_path: Path, environ: dict[str, str], problem: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    environ = {k: str(empty) if v == "EMPTY" else v for k, v in environ.items()}
    with pytest.raises(SettingsError, match=f"SLACK_APP_TOKEN.*{problem}"):
        read_secret(environ, "SLACK_APP_TOKEN")


def test_secrets_leave_the_environment_and_the_ci_token_is_kept_aside(tmp_path: Path) -> None:
    token = tmp_path / "gh"
    token.write_text("ghp_fromafile0123456789abcdef")
    environ = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET_FILE": "/run/secrets/signing",
        "EVENTMESH_DATABASE_URL": "sqlite:///x",
        "MY_CI_TOKEN_FILE": str(token),
        "SLACK_CLIENT_SECRET": "oauth",
        "PATH": "/usr/bin",
    }
    assert read_ci_token(environ, "MY_CI_TOKEN") == "ghp_fromafile0123456789abcdef"
    scrub_secrets(
        ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "EVENTMESH_DATABASE_URL", "MY_CI_TOKEN"],
        environ,
    )
    assert environ == {"PATH": "/usr/bin"}
    assert SECRETS["MY_CI_TOKEN"] == "ghp_fromafile0123456789abcdef"  # what the CI client reads


def test_children_get_an_allow_listed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-must-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_mustnotleak")
    monkeypatch.setenv("EVENTMESH_DATABASE_URL", "postgresql://bot:pw@db/bot")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-must-not-leak")
    monkeypatch.setenv("EVENTMESH_CONFIG", "config/eventmesh.yml")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = child_environment({"CARGO_TERM_COLOR": "never"})
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "TZ",
        "USER",
        "LOGNAME",
        "LC_ALL",
        "EVENTMESH_CONFIG",
        "CARGO_TERM_COLOR",
    } | {name for name in os.environ if name.startswith(("LC_", "EVENTMESH_"))} - {
        "EVENTMESH_DATABASE_URL"
    }
    assert env["CARGO_TERM_COLOR"] == "never" and env["LC_ALL"] == "C.UTF-8"
    assert "EVENTMESH_DATABASE_URL" not in env and "GITHUB_TOKEN" not in env

    async def printed() -> str:
        local = LocalTransport(environment={"CARGO_TERM_COLOR": "never"})
        return (await local.run(Shell("env"))).stdout

    out = asyncio.run(printed())
    for secret in ("xoxb-must-not-leak", "ghp_mustnotleak", "aws-must-not-leak", "pw@db"):
        assert secret not in out
    assert "CARGO_TERM_COLOR=never" in out


READ_ENVIRON = "import sys; open(f'/proc/{sys.argv[1]}/environ', 'rb').read(); print('read')"
# The bot's own function, run by the system's Python as nobody (the virtualenv's is root's).
HOLD = (
    "import ctypes, ctypes.util, logging, sys\n"
    f"PR_SET_DUMPABLE = {PR_SET_DUMPABLE}\n"
    + inspect.getsource(make_non_dumpable)
    + "done = make_non_dumpable() if sys.argv[1] == 'yes' else False\n"
    "print('ready', done, flush=True)\n"
    "sys.stdin.read()\n"
)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run two processes as nobody")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="needs a python3 in /usr/bin that nobody may run")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize("non_dumpable", [False, True])
def test_another_process_of_the_same_user_cannot_read_the_environment(
    non_dumpable: bool,
) -> None:
    # The bot process, as nobody, with a secret in the environment it started with.
    holder = subprocess.Popen(
        [str(SYSTEM_PYTHON), "-c", HOLD, "yes" if non_dumpable else "no"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-in-proc-environ"},
        preexec_fn=_as_nobody,
        cwd="/",
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().decode().split() == ["ready", str(non_dumpable)]
        # Another process of the same user (a build the bot started, say) tries to read it.
        reader = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", READ_ENVIRON, str(holder.pid)],
            capture_output=True,
            preexec_fn=_as_nobody,
            cwd="/",
        )
    finally:
        holder.communicate(b"", timeout=10)
    if non_dumpable:
        assert reader.returncode != 0 and b"PermissionError" in reader.stderr
    else:
        assert reader.returncode == 0 and b"read" in reader.stdout
