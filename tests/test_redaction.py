"""Redaction: one function for log lines and for everything shown (bot/redaction.py)."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import RedactSecrets
from bot.redaction import REDACTED, redact, secret_name
from bot.runbook.changes.progress import shown_output
from bot.transport.base import CommandResult

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    + "\n".join("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAA" for _ in range(30))
    + "\n-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("DB_PASSWORD=hunter2-db", "hunter2-db"),
        ("db_password=hunter2-db", "hunter2-db"),
        ("export API_TOKEN='tok en 42'", "tok en 42"),
        ("AWS_SECRET_ACCESS_KEY=" + AWS_SECRET, AWS_SECRET),
        ("aws_secret_access_key = " + AWS_SECRET, AWS_SECRET),
        ('{"SecretAccessKey": "' + AWS_SECRET + '"}', AWS_SECRET),
        ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("key id AKIAIOSFODNN7EXAMPLE in a sentence", "AKIAIOSFODNN7EXAMPLE"),
        ("STRIPE_KEY=sk_live_abcdef", "sk_live_abcdef"),
        ("client_secret_value: s3cr3t-value", "s3cr3t-value"),
        ("postgresql+psycopg://bot:pa55word@db.internal:5432/bot", "pa55word"),
        ("cloning https://x-access-token:ghs_abc123def@github.com/o/r", "ghs_abc123def"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' x", "dXNlcjpwYXNzd29yZA=="),
        ("token xoxb-1234567890-abcdefghij leaked", "xoxb-1234567890-abcdefghij"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrst"),
        (PEM, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
    ],
)
def test_credentials_are_redacted_whoever_printed_them(text: str, secret: str) -> None:
    shown = redact(text)
    assert secret not in shown
    assert "redacted" in shown


def test_a_private_key_cut_by_the_tail_is_still_recognised() -> None:
    # Only the block's last lines are in a failing command's tail.
    output = "building\n" + PEM + "\nerror: could not sign\n"
    result = CommandResult("local", "make", 2, output, "", 0.1)
    shown = shown_output(result)
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" not in shown
    assert "error: could not sign" in shown
    cut = "\n".join(PEM.splitlines()[10:])  # BEGIN and the first lines gone
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" not in redact(cut)


def test_ordinary_text_is_kept() -> None:
    text = (
        "monkey=1 keyboard=us keep_releases: 5 deploy@staging:2222 ssh://deploy@host "
        "http://127.0.0.1:8080/healthz answered 200 in 3 ms"
    )
    assert redact(text) == text


def test_known_values_are_redacted_anywhere_and_names_tell_secrets() -> None:
    assert redact("the value opaque-1234 leaked", ["opaque-1234"]) == f"the value {REDACTED} leaked"
    assert secret_name("DB_PASSWORD") and secret_name("api_key") and secret_name("GITHUB_TOKEN")
    assert not secret_name("CARGO_TERM_COLOR") and not secret_name("MONKEY")


def test_the_log_filter_redacts_with_the_same_function() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("test-redaction-patterns")
    logger.addHandler(handler)
    try:
        logger.warning("build printed DB_PASSWORD=%s and %s", "hunter2-db", "AKIAIOSFODNN7EXAMPLE")
        logger.warning("connecting to postgresql://bot:pa55word@db/bot")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("hunter2-db", "AKIAIOSFODNN7EXAMPLE", "pa55word"):
        assert secret not in text
    assert "DB_PASSWORD=[redacted]" in text
