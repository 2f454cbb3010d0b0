"""Secrets planted everywhere a deploy can meet them, and found nowhere the bot writes.

The real bot (HTTP mode) gets its secrets the Docker/Kubernetes way where it can (the signing
secret, the CI token and a PostgreSQL URL with a password as *_FILE), and AWS keys in its
environment; the config's `deploy.env` holds a token; the build prints its whole environment,
a database password, a URL with userinfo, a bearer token, an AWS secret key and a private key,
and fails, so that its output is shown. Then everything the bot wrote is searched: its log (at
DEBUG), every Slack call the fake recorded and every answer it was sent, and every row of every
table of its database (the audit log among them). The build's own environment is read too.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select

from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEST_LIMITS,
    BotProcess,
    start_bot,
    stop_process,
)
from tests.support.approvals import DEPLOYER
from tests.support.conversation import Conversation, text_of
from tests.support.deploy_env import demo_target
from tests.support.deploy_reports import finished, run_of, thread
from tests.support.github_fake import GitHubFake
from tests.support.slack_fake import SlackFake

CI_TOKEN = "ghp_PlantedCiToken0123456789abcdefXYZ"
AWS_KEY_ID = "AKIAPLANTED0EXAMPLE9"
AWS_SECRET = "PlantedAwsSecretKey/0123456789+abcdefghijkl"
DB_PASSWORD = "Pl4ntedDbPassw0rd"
CONFIG_TOKEN = "cfg-planted-deploy-token-4242"
BUILD_SECRETS = {
    "db": "build-db-pass-1234567",
    "url": "build-url-pass-7654321",
    "bearer": "buildBearerToken0987654321",
    "aws": "BuildAwsSecret/abcdefghijklmnop0123",
    "pem": "MIIEpAIBAAKCAQEAplantedPemBodyLine",
}
BOT_SECRETS = [BOT_TOKEN, SIGNING_SECRET, CI_TOKEN, AWS_KEY_ID, AWS_SECRET, DB_PASSWORD]

PLANT = """\
env > {env_file}
env
echo "DB_PASSWORD={db}"
echo "connecting to postgres://svc:{url}@db.internal/app"
echo "curl -H 'Authorization: Bearer {bearer}' https://api.internal"
echo "aws_secret_access_key = {aws}"
printf -- '-----BEGIN RSA PRIVATE KEY-----\\n{pem}\\n{pem}\\n-----END RSA PRIVATE KEY-----\\n'
echo "the config's token: $DEPLOY_API_TOKEN"
echo "error: could not link" >&2
exit 1
"""


@pytest.fixture
def planted_bot(
    tmp_path: Path, slack: SlackFake, postgres_schema: str
) -> Iterator[tuple[BotProcess, Path]]:
    target = demo_target(tmp_path, "qa")
    env_file = tmp_path / "build-environment.txt"
    script = target.workdir / "plant.sh"
    script.write_text(PLANT.format(env_file=shlex.quote(str(env_file)), **BUILD_SECRETS))
    files = tmp_path / "secrets"
    files.mkdir()
    (files / "signing").write_text(SIGNING_SECRET + "\n")
    (files / "ci").write_text(CI_TOKEN)
    database_url = postgres_schema.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    (files / "db").write_text(database_url)
    with GitHubFake(token=CI_TOKEN) as github:
        config = tmp_path / "eventmesh.yml"
        environment = target.environment(build=f"sh {shlex.quote(str(script))}")
        environment["env"] = {"DEPLOY_API_TOKEN": CONFIG_TOKEN, "CARGO_TERM_COLOR": "never"}
        config.write_text(
            json.dumps(
                {
                    "access": {"deployers": [DEPLOYER]},
                    "ci": {
                        "provider": "github",
                        "repository": github.repository,
                        "workflow": github.workflow,
                        "api_url": github.url,
                        "token_env": "PLANTED_CI_TOKEN",
                    },
                    "alerts": {"scheduled_checks": False},
                    "limits": TEST_LIMITS,
                    "environments": {"qa": environment},
                }
            )
        )
        process, url, log = start_bot(
            tmp_path,
            LOG_LEVEL="DEBUG",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET_FILE=str(files / "signing"),
            SLACK_API_URL=slack.api_url,
            EVENTMESH_CONFIG=str(config),
            EVENTMESH_DATABASE_URL_FILE=str(files / "db"),
            PLANTED_CI_TOKEN_FILE=str(files / "ci"),
            AWS_ACCESS_KEY_ID=AWS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        )
        bot = BotProcess(url, process, log, postgres_schema, slack)
        try:
            yield bot, env_file
        finally:
            bot.http.close()
            stop_process(process)
            target.stop()


def everything_in_the_database(url: str) -> str:
    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as connection:
            rows = {
                name: [list(map(str, row)) for row in connection.execute(select(table))]
                for name, table in tables.tables.items()
            }
    finally:
        engine.dispose()
    assert rows["audit_log"] and rows["deployment_steps"], rows.keys()
    return json.dumps(rows)


def test_no_secret_reaches_a_child_a_log_a_slack_call_or_the_database(
    planted_bot: tuple[BotProcess, Path],
) -> None:
    bot, env_file = planted_bot
    chat = Conversation(bot)
    run = run_of(chat.as_(DEPLOYER).say("/deploy qa 1.0.0"))
    final = run.when(finished)
    assert "Build" in final["text"] and "failed" in final["text"]
    failure = next(
        m for m in thread(bot.slack, run.channel, run.ts or "") if "could not link" in text_of(m)
    )
    shown = text_of(failure)
    assert "[redacted]" in shown  # the output was shown, with the secrets taken out
    assert "the config's token: [redacted]" in shown  # a known value, even without its name

    # The build's environment: what the config gave it, none of the bot's secrets.
    child = env_file.read_text()
    assert f"DEPLOY_API_TOKEN={CONFIG_TOKEN}" in child
    assert "EVENTMESH_VERSION=1.0.0" in child
    for secret in [*BOT_SECRETS, "SLACK_", "PLANTED_CI_TOKEN", "AWS_", "EVENTMESH_DATABASE_URL"]:
        assert secret not in child, secret

    assert stop_process(bot.process) == 0
    written = {
        "the bot's log": bot.log.read_text(),
        "the Slack calls": json.dumps([[c.method, c.args] for c in bot.slack.calls]),
        "the answers sent to response_url": json.dumps(bot.slack.responses),
        "the database": everything_in_the_database(bot.database_url),
    }
    assert "bot.transport.commands" in written["the bot's log"]  # DEBUG: what it ran
    planted = [*BOT_SECRETS, CONFIG_TOKEN, *BUILD_SECRETS.values()]
    found = [(s, where) for s in planted for where, text in written.items() if s in text]
    assert found == []
