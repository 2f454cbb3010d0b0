"""/health <env> diagnose and /health <env> logs: what the words ask for."""

from __future__ import annotations

import pytest

from bot.config import load_config
from bot.runbook.health.log_search import LogQuery, Which
from handlers.health import DiagnoseRequest, LogsRequest, parse, parse_logs
from tests.conftest import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("staging logs", LogQuery()),
        ("Staging LOGS Errors", LogQuery(Which.ERRORS)),
        ("staging logs warnings 50", LogQuery(Which.WARNINGS, 50)),
        ("staging logs 5000", LogQuery(count=5000)),
        (
            "staging logs errors 7 matching  Connection  refused ",
            LogQuery(Which.ERRORS, 7, "Connection  refused"),
        ),
        ("staging logs matching errors 5", LogQuery(text="errors 5")),
        ("staging logs matching matching", LogQuery(text="matching")),
        ("staging logs matching $(reboot)", LogQuery(text="$(reboot)")),
        ("staging logs matching a\nb", LogQuery(text="a\nb")),
        ("staging logs matching \x00", LogQuery(text="\x00")),
        ("staging logs matching -e", LogQuery(text="-e")),
    ],
)
def test_logs_requests(text: str, query: LogQuery) -> None:
    request = parse_logs(text, CONFIG)
    assert isinstance(request, LogsRequest)
    assert (request.env.name, request.query) == ("staging", query)


def test_diagnose_follows_one_environment() -> None:
    request = parse(["production", "DIAGNOSE"], CONFIG)
    assert isinstance(request, DiagnoseRequest) and request.env.name == "production"
    assert "follows one environment" in str(parse(["all", "diagnose"], CONFIG))
    assert "does not understand" in str(parse(["staging", "diagnose", "x"], CONFIG))
