"""The CI gate against a local fake of GitHub's REST API (never api.github.com)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest

from bot.config import CiSettings
from bot.runbook.changes.ci import CiClient, CiError, CiVerdict
from bot.runbook.changes.progress import redact
from tests.support.github_fake import GitHubFake, run

TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    with GitHubFake(token=TOKEN, default_branch="trunk") as fake:
        yield fake


def settings(github: GitHubFake) -> CiSettings:
    return CiSettings(
        provider="github",
        repository="eventmesh/eventmesh",
        workflow="ci.yml",
        api_url=github.url,
        token_env="EVENTMESH_TEST_CI_TOKEN",
    )


def gate(github: GitHubFake, token: str | None = TOKEN) -> CiVerdict:
    async def ask() -> CiVerdict:
        environ = {"EVENTMESH_TEST_CI_TOKEN": token} if token else {}
        async with httpx.AsyncClient() as http:
            return await CiClient(settings(github), http, environ).gate()

    return asyncio.run(ask())


def test_green_when_the_latest_run_on_the_default_branch_passed(github: GitHubFake) -> None:
    github.set_runs(run(9, "success", branch="trunk"), run(8, "failure", branch="trunk"))
    verdict = gate(github)
    assert verdict.passed and verdict.summary == "ci.yml passed on trunk (0123456)"
    repo, runs = github.requests
    assert repo.path == "/repos/eventmesh/eventmesh"
    assert runs.path == "/repos/eventmesh/eventmesh/actions/workflows/ci.yml/runs"
    assert runs.query == {"branch": ["trunk"], "per_page": ["5"]}
    assert runs.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("latest", "says"),
    [
        (run(9, "failure", branch="trunk"), "ended: failure"),
        (run(9, None, status="in_progress", branch="trunk"), "is still in_progress"),
    ],
)
def test_red_or_unfinished_is_not_green(github: GitHubFake, latest: dict, says: str) -> None:  # type: ignore[type-arg]
    github.set_runs(latest, run(8, "success", branch="trunk"))
    verdict = gate(github)
    assert not verdict.passed and says in verdict.summary
    assert verdict.run is not None and verdict.run.url.endswith("/runs/9")


def test_runs_on_other_branches_do_not_count(github: GitHubFake) -> None:
    github.set_runs(run(9, "success", branch="feature"))
    assert gate(github).summary == "ci.yml has no runs on trunk"


def test_a_refused_token_is_one_line_naming_the_variable_never_the_token(
    github: GitHubFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "ghp_" + "Z" * 36
    with pytest.raises(CiError) as caught:
        gate(github, token=wrong)
    message = str(caught.value)
    assert message == (
        "GitHub refused the request (HTTP 401): check the token in $EVENTMESH_TEST_CI_TOKEN"
    )
    assert wrong not in caplog.text and TOKEN not in caplog.text


def test_github_unreachable_is_one_line(github: GitHubFake) -> None:
    unreachable = CiSettings(
        provider="github",
        repository="eventmesh/eventmesh",
        workflow="ci.yml",
        api_url="http://127.0.0.1:1",
    )

    async def ask() -> None:
        async with httpx.AsyncClient() as http:
            await CiClient(unreachable, http, {}).gate()

    with pytest.raises(CiError, match=r"^cannot reach GitHub at http://127.0.0.1:1: "):
        asyncio.run(ask())


def test_output_is_redacted_of_tokens_whoever_printed_them() -> None:
    text = (
        f"push with {TOKEN}\nSLACK xoxb-1234-5678-abcdefgh\npassword=hunter2 ok\n"
        f"exported {TOKEN[:8]}"
    )
    shown = redact(text, secrets=["hunter2"])
    assert TOKEN not in shown and "xoxb-1234" not in shown and "hunter2" not in shown
    assert shown.count("[redacted]") == 3
    assert "password=[redacted] ok" in shown
