"""Logging set-up, with secrets redacted from every record, whoever logs it.

The redaction is bot/redaction.py's `redact`, the same function that cleans command output
shown in Slack: the process's known secrets (registered at start-up) and anything that looks
like a credential (`DB_PASSWORD=…`, `scheme://user:pw@host`, bearer tokens, private keys).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

from bot.redaction import REDACTED as REDACTED  # re-exported for the tests of the filter
from bot.redaction import redact, register_secrets


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        register_secrets(secrets)

    def redact(self, text: str) -> str:
        return redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class OneLineRetries(logging.Filter):
    """Slack's libraries in a retry loop (Socket Mode reconnecting every 10 s while Slack is
    away) log a multi-line traceback per try: each distinct complaint becomes one line, said
    again at most every REPEAT_S. The bot says when Slack goes and comes back (readiness)."""

    REPEAT_S = 600.0
    LIBRARIES = ("slack_sdk", "slack_bolt", "aiohttp")

    def __init__(self) -> None:
        super().__init__()
        self._said: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LIBRARIES):
            return True
        lines = record.getMessage().splitlines() or [""]
        # "...failed. (url: …)\nThe server responded with: {…}": Slack's answer is the news.
        text = " ".join(line.strip() for line in lines[:2])
        record.msg, record.args, record.exc_info, record.exc_text = text, None, None, None
        now = time.monotonic()
        said = self._said.get(text)
        if said is not None and now - said < self.REPEAT_S:
            return False
        self._said[text] = now
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OneLineRetries())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Every request to the Web API at INFO would drown the bot's own lines.
    # Alembic says what it is about to do at every start; the bot says what it did (runtime).
    noisy_loggers = ("slack_sdk", "slack_bolt", "httpx", "uvicorn.error", "aiohttp", "apscheduler")
    for noisy in (*noisy_loggers, "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
