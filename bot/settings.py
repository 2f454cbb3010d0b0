"""Process settings from the environment (the run-mode contract in DESIGN.md section 2)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.store import default_database_url

Mode = Literal["socket", "http", "console"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable and the fix."""


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

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
            bot_token=get("SLACK_BOT_TOKEN"),
            app_token=get("SLACK_APP_TOKEN"),
            signing_secret=get("SLACK_SIGNING_SECRET"),
            api_url=get("SLACK_API_URL"),
            config_path=Path(get("EVENTMESH_CONFIG") or "config/eventmesh.yml"),
            data_dir=data_dir,
            database_url=get("EVENTMESH_DATABASE_URL") or default_database_url(data_dir),
            host=get("HOST") or "127.0.0.1",
            port=port,
            port_was_set=port_text is not None,
            log_level=log_level,
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
        """Values that must never appear in a log line."""
        return [s for s in (self.bot_token, self.app_token, self.signing_secret) if s]


def scrub_slack_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Take Slack's secrets out of the process environment once Settings has read them.

    Bolt reads SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET from the environment behind the
    explicit arguments, and silently switches to its OAuth install flow when SLACK_CLIENT_ID
    and SLACK_CLIENT_SECRET are set; and every command the bot runs later (build, test, ssh)
    would inherit them.
    """
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        if environ.pop(name, None) is not None:
            logging.getLogger(__name__).warning(
                "%s is set but ignored: this bot uses a bot token, not Slack's OAuth install flow",
                name,
            )
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        environ.pop(name, None)
