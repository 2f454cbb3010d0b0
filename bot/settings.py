"""Process settings from the environment (the run-mode contract in DESIGN.md section 2).

Secrets (the Slack tokens, the database URL, the CI token) may be given as files, the Docker and
Kubernetes secrets convention: `SLACK_BOT_TOKEN_FILE=/run/secrets/slack_bot_token` instead of
`SLACK_BOT_TOKEN=…`. Once read they are taken out of the process environment (`scrub_secrets`)
and kept in `SECRETS`, and the process is made non-dumpable, so that neither a child process
nor another process of the same user can read them (bot/transport/local.py gives children an
allow-listed environment besides).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.redaction import register_secrets
from bot.store import default_database_url

Mode = Literal["socket", "http", "console"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# The secrets of the process itself; `<ci.token_env>` joins them once the config is read.
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "EVENTMESH_DATABASE_URL",
)
MAX_SECRET_FILE = 64 * 1024  # a token or a URL; anything bigger is the wrong file
CONSOLE_DIR = "console"  # the console's state, under the data directory


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable and the fix."""


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """`name`'s value, from the variable itself or from the file `<name>_FILE` names.

    Both set is an error (which one is meant?), as is a file that cannot be read or is empty.
    A file's content is taken without its trailing newline (what `echo` and editors leave).
    """
    value = environ.get(name, "").strip() or None
    path = environ.get(f"{name}_FILE", "").strip() or None
    if path is None:
        return value
    if value is not None:
        raise SettingsError(f"{name} and {name}_FILE are both set: set one of them")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise SettingsError(
            f"{name}_FILE={path}: cannot read it ({exc.strerror}) — mount the secret there, "
            "readable by the bot's user"
        ) from None
    if len(data) > MAX_SECRET_FILE:
        raise SettingsError(f"{name}_FILE={path}: over {MAX_SECRET_FILE // 1024} KiB, not a secret")
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise SettingsError(f"{name}_FILE={path}: the file is empty")
    return text


class _Secrets(Mapping[str, str]):
    """Secrets taken out of os.environ at start-up, by variable name, with os.environ behind
    them: what code that looks a secret up by its variable (the CI client) reads instead."""

    def __init__(self) -> None:
        self._kept: dict[str, str] = {}

    def keep(self, name: str, value: str | None) -> None:
        if value:
            self._kept[name] = value
            register_secrets([value])

    def __getitem__(self, name: str) -> str:
        if name in self._kept:
            return self._kept[name]
        return os.environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**os.environ, **self._kept})

    def __len__(self) -> int:
        return len({**os.environ, **self._kept})


SECRETS = _Secrets()


@dataclass(frozen=True)
class Settings:
    bot_token: str | None
    app_token: str | None
    signing_secret: str | None
    api_url: str | None
    config_path: Path
    data_dir: Path
    database_url: str
    host: str
    port: int
    port_was_set: bool
    log_level: str
    # Neither EVENTMESH_DATA_DIR nor EVENTMESH_DATABASE_URL set: the console keeps its state
    # in a directory of its own (`for_console`), never in the one a Slack-mode bot uses.
    state_was_set: bool = False
    config_was_set: bool = False  # EVENTMESH_CONFIG named the file (else the shipped one)
    database_url_was_set: bool = False  # EVENTMESH_DATABASE_URL(_FILE) named the store

    def for_console(self) -> Settings:
        """The console's settings: its state in `<data dir>/console` unless a variable said
        where, so the demo's incidents and timers never reach a bot on Slack (and back)."""
        if self.state_was_set:
            return self
        data_dir = self.data_dir / CONSOLE_DIR
        return replace(self, data_dir=data_dir, database_url=default_database_url(data_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

        secret = {name: read_secret(environ, name) for name in SECRET_VARIABLES}

        data_dir = Path(get("EVENTMESH_DATA_DIR") or "data")
        port_text = get("PORT")
        try:
            port = int(port_text or "3000")
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise SettingsError(f"PORT={port_text!r} is not a port number (0-65535)") from None
        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        return cls(
            bot_token=secret["SLACK_BOT_TOKEN"],
            app_token=secret["SLACK_APP_TOKEN"],
            signing_secret=secret["SLACK_SIGNING_SECRET"],
            api_url=get("SLACK_API_URL"),
            config_path=Path(get("EVENTMESH_CONFIG") or "config/eventmesh.yml"),
            data_dir=data_dir,
            database_url=secret["EVENTMESH_DATABASE_URL"] or default_database_url(data_dir),
            host=get("HOST") or "127.0.0.1",
            port=port,
            port_was_set=port_text is not None,
            log_level=log_level,
            config_was_set=get("EVENTMESH_CONFIG") is not None,
            database_url_was_set=secret["EVENTMESH_DATABASE_URL"] is not None,
            state_was_set=get("EVENTMESH_DATA_DIR") is not None
            or secret["EVENTMESH_DATABASE_URL"] is not None,
        )

    def mode(self, forced: Mode | None = None, *, interactive: bool = True) -> Mode:
        """The run mode: forced by --mode, else chosen by which tokens are set.

        `interactive` says whether standard input is a terminal. Without tokens the default is
        the console, which only makes sense with someone typing: started by an orchestrator
        (no terminal) it would read end-of-file and exit 0, so a missing secret would look
        like a clean stop. That is an error instead; --mode console still forces the console.
        """
        mode: Mode
        if forced is not None:
            mode = forced
        elif self.bot_token and self.app_token:
            mode = "socket"
        elif self.bot_token and self.signing_secret:
            mode = "http"
        elif interactive:
            mode = "console"
        else:
            raise SettingsError(
                "no Slack tokens and standard input is not a terminal: set SLACK_BOT_TOKEN "
                "and SLACK_APP_TOKEN (Socket Mode) or SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                "(HTTP mode), or run with --mode console for the local console"
            )
        if mode == "socket" and not (self.bot_token and self.app_token):
            raise SettingsError(
                "Socket Mode needs SLACK_BOT_TOKEN (xoxb-…) and SLACK_APP_TOKEN (xapp-…, "
                "with connections:write, from the app's Basic Information page)"
            )
        if mode == "http" and not (self.bot_token and self.signing_secret):
            raise SettingsError(
                "HTTP mode needs SLACK_BOT_TOKEN (xoxb-…) and SLACK_SIGNING_SECRET "
                "(from the app's Basic Information page)"
            )
        return mode

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line: the tokens, the database URL and its
        password."""
        found = [self.bot_token, self.app_token, self.signing_secret, self.database_url]
        with contextlib.suppress(ArgumentError, ValueError):
            found.append(make_url(self.database_url).password)  # type: ignore[arg-type]
        return [s for s in found if s]


def read_ci_token(environ: Mapping[str, str], token_env: str) -> str | None:
    """The CI token from `<ci.token_env>` or `<ci.token_env>_FILE`, kept in SECRETS."""
    token = read_secret(environ, token_env)
    SECRETS.keep(token_env, token)
    return token


def scrub_secrets(
    names: Iterable[str] = SECRET_VARIABLES, environ: MutableMapping[str, str] = os.environ
) -> None:
    """Take the secrets (and their `_FILE` variables) out of the process environment once read.

    Bolt reads SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET from the environment behind the
    explicit arguments, and silently switches to its OAuth install flow when SLACK_CLIENT_ID
    and SLACK_CLIENT_SECRET are set; and nothing the bot starts later (build, test, ssh)
    must find them. (The children get an allow-listed environment anyway: local.py.)
    """
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        value = environ.pop(name, None)
        if value is not None:
            register_secrets([value])
            logging.getLogger(__name__).warning(
                "%s is set but ignored: this bot uses a bot token, not Slack's OAuth install flow",
                name,
            )
    for name in names:
        for variable in (name, f"{name}_FILE"):
            environ.pop(variable, None)


PR_SET_DUMPABLE = 4


def make_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): other processes of this user can no longer read this one's
    /proc/<pid>/environ (which keeps the variables the process started with, whatever
    os.environ says since), nor its memory, nor get a core dump of it. Children are not
    affected (execve resets the flag). Linux only; elsewhere a no-op (False)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        done = False
    if not done:
        logging.getLogger(__name__).warning(
            "could not make the process non-dumpable: other processes of this user may read "
            "its environment in /proc"
        )
    return done
