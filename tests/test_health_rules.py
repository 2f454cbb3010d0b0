"""The runbook's classification rules, the probe's time bound, and the report's Block Kit."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bot.config import Environment, Thresholds
from bot.runbook.health.health import (
    Health,
    HealthChecker,
    HealthResult,
    classify,
    second_reading,
)
from bot.runbook.health.probe import Probe, Prober
from bot.slack import blocks
from bot.store import Base, Store
from bot.telemetry import Telemetry
from tests.support.slack_fake import block_kit_errors

THRESHOLDS = Thresholds()
HEALTHY_STATUS = json.dumps(
    {
        "components": {
            "api": {"status": "up", "critical": True},
            "redis": {"status": "up", "critical": False},
        }
    }
)
METRICS_TEXT = "# TYPE up gauge\nup 1\n"


def healthz(code: int = 200, latency: float = 20.0, body: str | None = None) -> Probe:
    text = body if body is not None else json.dumps({"status": "healthy", "version": "1.2.3"})
    return Probe("h", status_code=code, latency_ms=latency, body=text)


def status(components: dict[str, tuple[str, bool]] | None = None, latency: float = 20.0) -> Probe:
    if components is None:
        return Probe("s", status_code=200, latency_ms=latency, body=HEALTHY_STATUS)
    body = {"components": {n: {"status": s, "critical": c} for n, (s, c) in components.items()}}
    return Probe("s", status_code=200, latency_ms=latency, body=json.dumps(body))


def metrics(code: int = 200, body: str = METRICS_TEXT) -> Probe:
    return Probe("m", status_code=code, latency_ms=5.0, body=body)


def test_everything_fine_is_healthy() -> None:
    verdict = classify(healthz(), status(), metrics(), THRESHOLDS)
    assert verdict.health is Health.HEALTHY
    assert verdict.reasons == ()
    assert verdict.version == "1.2.3"
    assert verdict.metrics_available


def test_rules_from_the_runbook() -> None:
    cases = [
        (healthz(latency=600), status(), metrics(), Health.DEGRADED, "healthz slow"),
        (healthz(latency=499), status(), metrics(), Health.HEALTHY, None),
        (healthz(503), status(), metrics(), Health.UNHEALTHY, "healthz answered HTTP 503"),
        (healthz(404), status(), metrics(), Health.UNHEALTHY, "HTTP 404"),
        (healthz(body="<html>"), status(), metrics(), Health.UNHEALTHY, "JSON"),
        (healthz(body='{"status":"degraded"}'), status(), metrics(), Health.DEGRADED, "degraded"),
        (healthz(body='{"status":"down"}'), status(), metrics(), Health.UNHEALTHY, "'down'"),
        (
            Probe("h", error="connection refused"),
            status(),
            metrics(),
            Health.UNHEALTHY,
            "connection refused",
        ),
        (
            healthz(),
            status({"event_store": ("down", True)}),
            metrics(),
            Health.UNHEALTHY,
            "critical component event_store is down",
        ),
        (
            healthz(),
            status({"redis": ("down", False)}),
            metrics(),
            Health.DEGRADED,
            "component redis is down",
        ),
        (healthz(), status(latency=250), metrics(), Health.DEGRADED, "API slow"),
        (
            healthz(),
            Probe("s", status_code=503, latency_ms=3),
            metrics(),
            Health.DEGRADED,
            "status endpoint answered HTTP 503",
        ),
        (healthz(), status(), metrics(404), Health.DEGRADED, "metrics endpoint answered HTTP 404"),
        (healthz(), status(), metrics(body=""), Health.DEGRADED, "no Prometheus metrics"),
    ]
    for hz, st_, mt, expected, reason in cases:
        verdict = classify(hz, st_, mt, THRESHOLDS)
        assert verdict.health is expected, (hz, st_, mt)
        if reason:
            assert reason in verdict.reasons[0], verdict.reasons


def test_an_unreachable_host_is_one_reason_not_three() -> None:
    down = "host name does not resolve"
    verdict = classify(
        Probe("h", error=down), Probe("s", error=down), Probe("m", error=down), THRESHOLDS
    )
    assert verdict.health is Health.UNHEALTHY
    assert verdict.reasons == (f"healthz: {down}",)


@given(
    code=st.integers(100, 599),
    latency=st.floats(0, 5000),
    critical_down=st.booleans(),
    metrics_code=st.sampled_from([200, 404, 500]),
)
def test_worst_finding_wins(
    code: int, latency: float, critical_down: bool, metrics_code: int
) -> None:
    components = {"api": ("down" if critical_down else "up", True)}
    verdict = classify(
        healthz(code, latency), status(components), metrics(metrics_code), THRESHOLDS
    )
    if code != 200 or critical_down:
        assert verdict.health is Health.UNHEALTHY
    elif latency >= THRESHOLDS.health_response_ms.warning or metrics_code != 200:
        assert verdict.health is Health.DEGRADED
    else:
        assert verdict.health is Health.HEALTHY
    assert bool(verdict.reasons) == (verdict.health is not Health.HEALTHY)


def test_slowness_alone_asks_for_a_second_reading() -> None:
    only_slow = [
        (healthz(latency=600), status(), metrics(), ["healthz"]),
        (healthz(), status(latency=250), metrics(), ["status endpoint"]),
        (healthz(latency=600), status(latency=250), metrics(), ["healthz", "status endpoint"]),
    ]
    for hz, st_, mt, endpoints in only_slow:
        verdict = classify(hz, st_, mt, THRESHOLDS)
        assert [s.endpoint for s in verdict.slow] == endpoints
        assert {s.reason for s in verdict.slow} == set(verdict.reasons)
        assert verdict.only_slow, verdict
    not_only_slow = [
        (healthz(), status(), metrics()),  # nothing slow
        (healthz(latency=600, body="<html>"), status(), metrics()),  # Unhealthy anyway
        (healthz(503, latency=600), status(latency=250), metrics()),
        (healthz(), status({"redis": ("down", False)}, latency=250), metrics()),
        (healthz(latency=600), status(), metrics(404)),
        (healthz(latency=600, body='{"status":"degraded"}'), status(), metrics()),
    ]
    for hz, st_, mt in not_only_slow:
        assert not classify(hz, st_, mt, THRESHOLDS).only_slow, (hz, st_, mt)


@given(
    code=st.integers(100, 599),
    healthz_ms=st.floats(0, 5000),
    api_ms=st.floats(0, 5000),
    redis_down=st.booleans(),
    metrics_code=st.sampled_from([200, 404]),
)
def test_a_second_reading_is_asked_for_exactly_when_every_finding_is_slowness(
    code: int, healthz_ms: float, api_ms: float, redis_down: bool, metrics_code: int
) -> None:
    components = {"redis": ("down" if redis_down else "up", False)}
    verdict = classify(
        healthz(code, healthz_ms), status(components, api_ms), metrics(metrics_code), THRESHOLDS
    )
    slow = (code == 200 and healthz_ms >= THRESHOLDS.health_response_ms.warning) + (
        api_ms >= THRESHOLDS.api_response_ms.warning
    )
    others = code != 200 or redis_down or metrics_code != 200
    assert verdict.only_slow == (slow > 0 and not others)


def test_the_second_reading_classes_it_and_says_when_it_confirms_the_first() -> None:
    first = classify(healthz(), status(latency=383), metrics(), THRESHOLDS)

    fast = classify(healthz(), status(latency=40), metrics(), THRESHOLDS)
    assert second_reading(first, fast) == fast

    still = second_reading(first, classify(healthz(), status(latency=260), metrics(), THRESHOLDS))
    assert still.health is Health.DEGRADED
    assert still.reasons == (
        "API slow: 260 ms (warning at 200 ms); "
        "confirmed by a second request, the first took 383 ms",
    )

    failing = classify(Probe("h", status_code=503, latency_ms=3), status(), metrics(), THRESHOLDS)
    assert second_reading(first, failing) == failing


def test_a_host_that_never_answers_costs_the_timeout_not_a_tcp_timeout() -> None:
    # A listening socket that never accepts: the TCP handshake completes, no reply ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/healthz"

        with Prober() as prober:
            result = prober.submit(prober.get(url, timeout_s=0.3)).result()
    assert result.error == "no answer within 300 ms"
    assert result.status_code is None


def test_connection_refused_is_named() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/healthz"

    with Prober() as prober:
        assert prober.submit(prober.get(url, timeout_s=2)).result().error == "connection refused"


def result(name: str, health: Health, reasons: tuple[str, ...] = ()) -> HealthResult:
    return HealthResult(
        environment=name,
        health=health,
        checked_at=datetime(2026, 11, 27, tzinfo=UTC),
        status_code=200,
        latency_ms=12.0,
        version="0.1.0",
        reasons=reasons,
    )


def test_report_fits_block_kit_for_many_environments() -> None:
    results = {
        f"env{i}": result(f"env{i}", Health.UNHEALTHY, ("x" * 500, "<!channel> y" * 50))
        for i in range(80)
    }
    message = blocks.health_report(
        results, scope="all", requested_by="U1", warning_ms=500, critical_ms=2000
    )
    assert block_kit_errors(message.blocks) == []
    assert "<!channel>" not in json.dumps(message.blocks)
    assert len(message.text) <= blocks.FALLBACK_TEXT_MAX


def test_a_report_too_big_for_one_message_shows_the_worst_and_counts_the_rest() -> None:
    results = {
        f"env{i:03d}": (
            result(f"env{i:03d}", Health.UNHEALTHY, ("x" * 900, "y" * 900))
            if i % 2
            else result(f"env{i:03d}", Health.HEALTHY)
        )
        for i in range(1, 201)
    }
    message = blocks.health_report(
        results, scope="all", requested_by="U1", warning_ms=500, critical_ms=2000
    )
    assert block_kit_errors(message.blocks) == []
    assert len(message.blocks) <= blocks.MAX_BLOCKS
    assert message.blocks[-1]["type"] == "actions"  # Check again survives the cut
    shown = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section")
    # The worst first: more Unhealthy than fit, so no Healthy one is listed.
    assert "Unhealthy" in shown and "— Healthy" not in shown
    cut_line = message.blocks[-3]["text"]["text"]
    assert cut_line.startswith("… and ") and "100 Healthy" in cut_line
    listed = shown.count("*env")
    assert listed + int(cut_line.split()[2]) == 200
    assert message.text == "Health of all environments: 100 Healthy, 100 Unhealthy"


def test_report_shows_pending_environments_and_no_button_until_done() -> None:
    message = blocks.health_report(
        {"staging": result("staging", Health.HEALTHY), "dev": None},
        scope="all",
        requested_by="U1",
        warning_ms=500,
        critical_ms=2000,
    )
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert "*dev* — checking" in text
    assert "actions" not in [b["type"] for b in message.blocks]
    assert message.text == "Health of all environments: 1 Healthy, 1 checking"


def test_a_check_still_answers_when_the_store_is_down(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    Base.metadata.drop_all(store.engine)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = Environment(
            name="staging",
            base_url=f"http://127.0.0.1:{closed.getsockname()[1]}",
            transport="local",
        )

    with Prober() as prober:
        result = asyncio.run(HealthChecker(prober, THRESHOLDS, store, Telemetry()).check(env))
    assert result.health is Health.UNHEALTHY
    assert result.reasons == ("healthz: connection refused",)
    assert result.streak == 1
