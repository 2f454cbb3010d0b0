"""A silence's rules (bot/runbook/alerts/silences.py): how long, and over which alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from bot.config import AlertSettings, load_config
from bot.runbook.alerts.silences import extension, holds, needs_approver
from bot.store import Alert, AlertSilence
from tests.conftest import EXAMPLE_CONFIG

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SETTINGS = AlertSettings(silence_for=HOUR, silence_max=4 * HOUR)


def silence(began: datetime, until: datetime, by: str = "U0ONCALL") -> AlertSilence:
    return AlertSilence("production", "health", until, by, began)


def test_presses_extend_a_silence_up_to_silence_max_from_its_start() -> None:
    first = extension(T0, None, SETTINGS)
    assert first is not None and (first.began, first.until, first.capped) == (T0, T0 + HOUR, False)
    later = extension(T0 + 3.5 * HOUR, silence(T0, T0 + 4 * HOUR - 1 * HOUR), SETTINGS)
    assert later is not None
    assert (later.began, later.until, later.capped) == (T0, T0 + 4 * HOUR, True)
    assert extension(T0 + 3.9 * HOUR, silence(T0, T0 + 4 * HOUR), SETTINGS) is None
    # A silence_for longer than silence_max is capped from the first press.
    long = extension(T0, None, AlertSettings(silence_for=8 * HOUR, silence_max=4 * HOUR))
    assert long is not None and long.until == T0 + 4 * HOUR and long.capped


def test_productions_critical_is_held_only_by_an_approvers_silence() -> None:
    config = load_config(EXAMPLE_CONFIG)

    def alert(environment: str, level: str) -> Alert:
        # Only these two fields matter to the rule.
        return SimpleNamespace(environment=environment, level=level)  # type: ignore[return-value]

    critical = alert("production", "Critical")
    assert needs_approver(critical, config)
    assert not holds(silence(T0, T0 + HOUR, by="U0ONCALL"), critical, config)
    assert holds(silence(T0, T0 + HOUR, by="U0APPROVER1"), critical, config)
    assert holds(silence(T0, T0 + HOUR, by="U0ONCALL"), alert("production", "Warning"), config)
    assert not needs_approver(alert("staging", "Critical"), config)
