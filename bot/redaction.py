"""Secrets out of everything the bot shows or writes: one function, `redact`, for all of it.

Used for every log line (bot/logs.py), every command output shown in Slack or kept in the store
(bot/runbook/changes/progress.py), and every log line of a host that /health diagnose or logs
shows. Two kinds of secret are taken out:

- the values this process knows are secret (its Slack tokens, the CI token, the database URL
  and its password, secret-looking `deploy.env` values), registered once at start-up with
  `register_secrets`, plus any passed to `redact` by the caller;
- whatever looks like a credential, whoever printed it: `NAME=value` where the name says
  password, secret, token, credential or key (`DB_PASSWORD=`, `api_token:`, `"SecretAccessKey":`,
  any case), the password of a URL's userinfo (`scheme://user:pw@host`), bearer tokens and
  `Authorization:` values, Slack / GitHub tokens, AWS access key ids, PEM private-key blocks.

It errs on the side of hiding: `monkey=1` is kept, `SSH_KEY_PATH=/x` is hidden.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

REDACTED = "[redacted]"
# Shorter known values would be replaced inside ordinary words.
MIN_SECRET_LENGTH = 4

# A variable, key or field name that says it holds a secret: the word anywhere in the name
# (DB_PASSWORD, GITHUB_TOKEN_VALUE, aws_secret_access_key), `key` as a word of it (API_KEY,
# ssh-key, private_key; not monkey, keyboard), and the name quoted or not.
_NAME = (
    r"(?<![A-Za-z0-9])"
    r"(?:[A-Za-z0-9_.-]*(?:passw(?:or)?d|pwd|secret|token|credential)[A-Za-z0-9_.-]*"
    r"|(?:[A-Za-z0-9_.-]*[_.-])?key(?:[_.-][A-Za-z0-9_.-]*)?)"
)
_SECRET_NAME = re.compile(_NAME, re.IGNORECASE)
_ASSIGNED = re.compile(rf"(?i)({_NAME}[\"']?\s*(?:=|:)\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s/@]+)(@)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)([^\s\"',;]+)"
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)"
    # The tail of a block whose beginning was cut off (the last lines of a command's output).
    r"|(?:^[A-Za-z0-9+/=]{20,}\r?\n)+-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    re.DOTALL | re.MULTILINE,
)
_TOKENS = re.compile(
    r"xox[abposr]-[A-Za-z0-9-]{8,}"  # Slack bot, user, … tokens
    r"|xapp-[A-Za-z0-9-]{8,}"  # Slack app-level tokens
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"  # AWS access key ids
)

_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_PRIVATE_KEY, lambda m: "[redacted private key]"),
    (_URL_PASSWORD, lambda m: f"{m[1]}{REDACTED}{m[3]}"),
    (_AUTHORIZATION, lambda m: f"{m[1]}{REDACTED}"),
    (_BEARER, lambda m: f"{m[1]}{REDACTED}"),
    (_ASSIGNED, lambda m: f"{m[1]}{REDACTED}"),
    (_TOKENS, lambda m: REDACTED),
)

_known: frozenset[str] = frozenset()
_registering = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values this process must never show (its tokens, passwords), wherever they turn up."""
    global _known
    with _registering:
        _known = _known | {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}


def registered_secrets() -> frozenset[str]:
    return _known


def secret_name(name: str) -> bool:
    """Whether a variable called `name` holds a secret by its name (DB_PASSWORD, API_KEY)."""
    return _SECRET_NAME.fullmatch(name) is not None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret and everything that looks like a credential replaced."""
    values = _known.union(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted(values, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
