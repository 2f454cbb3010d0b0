"""The error rate from /metrics request counters: which counter, deltas, resets, left-out paths.

The scrapes below are what the frameworks print (EventMesh's prometheus_client, a Prometheus
client library's http_requests_total, Spring Boot's Micrometer, OpenTelemetry's exporter),
trimmed to a few series.
"""

from __future__ import annotations

import pytest

from bot.config import MetricsSettings
from bot.runbook.alerts.error_rate import (
    MIN_REQUESTS,
    RequestCounter,
    RequestCounts,
    error_rate,
)

EVENTMESH = """\
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

PROMETHEUS_CLIENT = """\
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{handler="/api/v1/orders",method="GET",status="2xx"} 970.0
http_requests_total{handler="/api/v1/orders",method="POST",status="5xx"} 30.0
http_requests_total{handler="/metrics",method="GET",status="2xx"} 40.0
"""

GO_CLIENT = """\
# TYPE http_requests_total counter
http_requests_total{code="200",handler="orders",method="get"} 970
http_requests_total{code="502",handler="orders",method="get"} 30
promhttp_metric_handler_requests_total{code="200"} 8
"""

MICROMETER = """\
# HELP http_server_requests_seconds
# TYPE http_server_requests_seconds summary
http_server_requests_seconds_count{exception="None",method="GET",outcome="SUCCESS",status="200",uri="/api/users/{id}",} 970.0
http_server_requests_seconds_sum{exception="None",method="GET",outcome="SUCCESS",status="200",uri="/api/users/{id}",} 12.5
http_server_requests_seconds_count{exception="IllegalStateException",method="GET",outcome="SERVER_ERROR",status="500",uri="/api/users/{id}",} 30.0
http_server_requests_seconds_count{exception="None",method="GET",outcome="SUCCESS",status="200",uri="/healthz",} 600.0
# HELP http_server_requests_seconds_max
# TYPE http_server_requests_seconds_max gauge
http_server_requests_seconds_max{exception="None",method="GET",outcome="SUCCESS",status="200",uri="/api/users/{id}",} 0.2
"""  # noqa: E501 (real lines are this long)

OPENTELEMETRY = """\
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/api/v1/orders",le="0.005",otel_scope_name="io.opentelemetry.tomcat-10.0"} 900
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/api/v1/orders",otel_scope_name="io.opentelemetry.tomcat-10.0"} 970
http_server_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="200",http_route="/api/v1/orders",otel_scope_name="io.opentelemetry.tomcat-10.0"} 3.1
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="503",http_route="/api/v1/orders",otel_scope_name="io.opentelemetry.tomcat-10.0"} 30
"""  # noqa: E501

AUTO = RequestCounter()


def counts(text: str, counter: RequestCounter = AUTO) -> RequestCounts:
    found = counter.read(text)
    assert isinstance(found, RequestCounts), found
    return found


def test_eventmesh_counter_by_path_and_code_without_the_checks_own_requests() -> None:
    found = counts(EVENTMESH)
    assert found.describe() == "eventmesh_http_requests_total (status in code, path in path)"
    assert found.series == {
        ("/api/v1", "200"): 970.0,
        ("/api/v1", "500"): 30.0,
        ("other", "404"): 5.0,
    }


@pytest.mark.parametrize(
    ("text", "described", "errors"),
    [
        (PROMETHEUS_CLIENT, "http_requests_total (status in status, path in handler)", 30.0),
        (GO_CLIENT, "http_requests_total (status in code, path in handler)", 30.0),
        (MICROMETER, "http_server_requests_seconds_count (status in status, path in uri)", 30.0),
        (
            OPENTELEMETRY,
            "http_server_request_duration_seconds_count "
            "(status in http_response_status_code, path in http_route)",
            30.0,
        ),
    ],
    ids=["prometheus-client", "go-client", "micrometer", "opentelemetry"],
)
def test_the_usual_counters_are_found_by_themselves(
    text: str, described: str, errors: float
) -> None:
    found = counts(text)
    assert found.describe() == described
    # Everything but the check's own /healthz and /metrics: 970 answered, 30 of them 5xx.
    assert sum(found.series.values()) == 1000.0
    assert sum(v for (_, status), v in found.series.items() if status.startswith("5")) == errors
    rate = error_rate({}, found.series)
    assert rate.percent == pytest.approx(3.0)


def test_a_uri_template_with_braces_and_micrometers_trailing_comma() -> None:
    assert ("/api/users/{id}", "500") in counts(MICROMETER).series
    assert ("/healthz", "200") not in counts(MICROMETER).series


def test_the_configured_counter_and_status_label_and_paths_left_out() -> None:
    text = (
        'app_http_calls_count{rc="200",path="/orders",} 90\n'
        'app_http_calls_count{rc="500",path="/orders",} 10\n'
        'app_http_calls_count{rc="200",path="/ping",} 500\n'
        'http_requests_total{code="500",handler="/orders"} 1000\n'  # present, but not this one
    )
    settings = MetricsSettings(
        requests_counter="app_http_calls", status_label="rc", exclude_paths=["/ping"]
    )
    found = counts(text, RequestCounter.of(settings))
    assert found.describe() == "app_http_calls_count (status in rc, path in path)"
    assert found.series == {("/orders", "200"): 90.0, ("/orders", "500"): 10.0}


def test_a_counter_without_a_path_label_counts_everything() -> None:
    found = counts('http_requests_total{code="200"} 5\nhttp_requests_total{code="500"} 1\n')
    assert found.path_label is None
    assert found.series == {("", "200"): 5.0, ("", "500"): 1.0}


@pytest.mark.parametrize(
    ("text", "counter", "problem"),
    [
        (
            'eventmesh_build_info{version="1"} 1\n',
            AUTO,
            "/metrics has no request counter (looked for eventmesh_http_requests_total, "
            "http_requests_total, http_server_requests_seconds_count, "
            "http_server_request_duration_seconds_count); name the service's in "
            "metrics.requests_counter",
        ),
        (
            'http_requests_total{method="GET"} 4\n',
            AUTO,
            "/metrics has http_requests_total but no status label (code, status, status_code, "
            "http_response_status_code); name it in metrics.status_label",
        ),
        (
            EVENTMESH,
            RequestCounter("app_requests"),
            "/metrics has no app_requests (metrics.requests_counter)",
        ),
        (
            GO_CLIENT,
            RequestCounter("http_requests_total", "rc"),
            "/metrics has http_requests_total but no label rc (metrics.status_label)",
        ),
        ("", AUTO, None),
        ("<html></html>", AUTO, None),
    ],
)
def test_a_scrape_without_the_counter_says_what_to_set(
    text: str, counter: RequestCounter, problem: str | None
) -> None:
    found = counter.read(text)
    assert isinstance(found, str)
    if problem is not None:
        assert found == problem


def test_labels_in_any_order_and_with_escapes() -> None:
    text = 'eventmesh_http_requests_total{path="/a\\"b",code="502",host="x"} 4\n'
    assert counts(text).series == {('/a\\"b', "502"): 4.0}


def test_the_rate_is_the_5xx_share_of_what_was_answered_in_between() -> None:
    before = {("/api/v1", "200"): 1000.0, ("/api/v1", "500"): 10.0}
    after = {("/api/v1", "200"): 1097.0, ("/api/v1", "500"): 13.0, ("other", "502"): 1.0}
    rate = error_rate(before, after)
    assert (rate.errors, rate.requests, rate.reset) == (4, 101, False)
    assert rate.percent == pytest.approx(4 / 101 * 100)


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
