"""The error rate of services that are not EventMesh: the real bot, its scheduled checks every
second, and services whose /metrics count requests as a Prometheus client library does
(`http_requests_total{code=…}`) and as Spring Boot's Micrometer does — found by themselves."""

from __future__ import annotations

import time
from pathlib import Path

from bot.store import AlertStateRow, Store
from tests.conftest import http_bot, new_channel
from tests.support.alerts import alert_in, alert_posts, alerts_config
from tests.support.counter_service import CounterService
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake

WAIT_S = 30.0


def measured(store: Store, env: str, count: int) -> AlertStateRow:
    """The error-rate state once `count` readings in a row were figures (polls the store the
    scheduled checks write: a condition, not a time)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        state = store.alert_state(env, "error_rate")
        figures = state.readings[-count:] if state is not None else ()
        if len(figures) == count and all(value is not None for value in figures):
            assert state is not None
            return state
        assert time.monotonic() < deadline, f"{env}: {state}"
        time.sleep(0.1)


def test_http_requests_total_and_micrometer_are_measured_and_quiet_when_healthy(
    tmp_path: Path, slack: SlackFake
) -> None:
    alerts, incidents = new_channel(), new_channel()
    with (
        CounterService("http_requests_total") as plain,
        CounterService("micrometer") as spring,
    ):
        config = alerts_config(
            tmp_path / "eventmesh.yml",
            {"orders": plain.url, "billing": spring.url},
            alerts_channel=alerts,
            incidents_channel=incidents,
        )
        with http_bot(tmp_path, slack, config) as bot:
            store = Store(bot.database_url)
            try:
                for env in ("orders", "billing"):
                    state = measured(store, env, 3)
                    assert set(state.readings[-3:]) == {0.0}, state
                    assert state.level == "Normal" and state.problem is None
                # Healthy, counted, measured: not one alert, no standing "no counter" Warning.
                assert alert_posts(slack, alerts) == []

                plain.set_error_rate(0.03)
                spring.set_error_rate(0.03)
                for env in ("orders", "billing"):
                    warning = slack.wait_for(
                        lambda f, env=env: alert_in(f, alerts, f"*{env}* · Error rate"),
                        timeout=WAIT_S,
                    )
                    assert "*Warning*" in shown(warning)
                    assert "3.0 %" in shown(warning), shown(warning)
            finally:
                store.close()
