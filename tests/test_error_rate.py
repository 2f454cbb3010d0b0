"""The error rate from /metrics request counters: deltas, resets, the check's own requests."""

from __future__ import annotations

import pytest

from bot.runbook.alerts.error_rate import MIN_REQUESTS, error_rate, request_counters

SCRAPE = """\
# HELP eventmesh_http_requests_total HTTP requests answered, by path and status code.
# TYPE eventmesh_http_requests_total counter
eventmesh_http_requests_total{code="200",path="/healthz"} 12.0
eventmesh_http_requests_total{code="200",path="/api/v1"} 970.0
eventmesh_http_requests_total{code="500",path="/api/v1"} 30.0
eventmesh_http_requests_total{code="503",path="/api/v1/status"} 2.0
eventmesh_http_requests_total{code="404",path="other"} 5.0 1700000000000
# HELP eventmesh_http_requests_created Created.
eventmesh_http_requests_created{code="200",path="/healthz"} 1.7e9
eventmesh_http_request_duration_seconds_count{path="/healthz"} 12.0
"""


def test_the_counters_of_a_scrape_by_path_and_code() -> None:
    assert request_counters(SCRAPE) == {
        ("/healthz", "200"): 12.0,
        ("/api/v1", "200"): 970.0,
        ("/api/v1", "500"): 30.0,
        ("/api/v1/status", "503"): 2.0,
        ("other", "404"): 5.0,
    }


@pytest.mark.parametrize(
    "text",
    ["", 'eventmesh_build_info{version="1"} 1\n', "not prometheus at all", "<html></html>"],
)
def test_a_scrape_without_the_counter_has_none(text: str) -> None:
    assert request_counters(text) is None


def test_labels_in_any_order_and_with_escapes() -> None:
    text = 'eventmesh_http_requests_total{path="/a\\"b",code="502",host="x"} 4\n'
    assert request_counters(text) == {('/a\\"b', "502"): 4.0}


def test_the_rate_is_the_5xx_share_of_what_was_answered_in_between() -> None:
    before = {("/api/v1", "200"): 1000.0, ("/api/v1", "500"): 10.0}
    after = {("/api/v1", "200"): 1097.0, ("/api/v1", "500"): 13.0, ("other", "502"): 1.0}
    rate = error_rate(before, after)
    assert (rate.errors, rate.requests, rate.reset) == (4, 101, False)
    assert rate.percent == pytest.approx(4 / 101 * 100)


def test_the_checks_own_requests_are_left_out() -> None:
    before = {("/api/v1", "200"): 100.0}
    after = {
        ("/api/v1", "200"): 150.0,
        ("/healthz", "500"): 1.0,
        ("/api/v1/status", "503"): 1.0,
        ("/metrics", "200"): 1.0,
    }
    rate = error_rate(before, after)
    assert (rate.errors, rate.requests, rate.percent) == (0, 50, 0.0)


def test_too_few_requests_is_no_rate_yet() -> None:
    before = {("/api/v1", "200"): 100.0}
    after = {("/api/v1", "200"): 100.0 + MIN_REQUESTS - 2, ("/api/v1", "500"): 1.0}
    rate = error_rate(before, after)
    assert rate.percent is None and not rate.measured
    assert rate.requests == MIN_REQUESTS - 1


def test_a_counter_that_went_down_was_reset_and_counts_from_zero() -> None:
    before = {("/api/v1", "200"): 5000.0, ("/api/v1", "500"): 100.0}
    after = {("/api/v1", "200"): 90.0, ("/api/v1", "500"): 10.0}
    rate = error_rate(before, after)
    assert rate.reset
    assert (rate.errors, rate.requests, rate.percent) == (10, 100, 10.0)
