"""/health end to end: signed requests to the real bot over HTTP, replies seen in the Slack fake."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.store import Store
from tests.conftest import SIGNING_SECRET, BotProcess, DemoService, Sent, new_channel
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, final_report, report_text
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.support.slack_signing import signed_headers, slash_command_body


def check_staging(bot: BotProcess) -> str:
    sent = bot.command("/health", "staging")
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    report = final_report(bot.slack, sent.channel)
    assert block_kit_errors(report["blocks"]) == []
    return report_text(report)


def test_healthy_staging(bot: BotProcess) -> None:
    text = check_staging(bot)
    assert "Health · staging" in text
    assert "*staging* — Healthy" in text
    assert "v0.1.0" in text


def test_slow_staging_is_degraded(bot: BotProcess, demo: DemoService) -> None:
    demo.set_faults(latency_ms=1500)
    text = check_staging(bot)
    assert "*staging* — Degraded" in text
    assert "healthz slow" in text


def test_staging_answering_503_is_unhealthy(bot: BotProcess, demo: DemoService) -> None:
    demo.set_faults(healthz_status=503)
    text = check_staging(bot)
    assert "*staging* — Unhealthy" in text
    assert "healthz answered HTTP 503" in text


def test_progress_is_one_message_updated_in_place(bot: BotProcess) -> None:
    sent = bot.command("/health", "staging")
    final_report(bot.slack, sent.channel)
    posts = [c for c in bot.slack.calls_to("chat.postMessage") if c.args["channel"] == sent.channel]
    updates = [c for c in bot.slack.calls_to("chat.update") if c.args["channel"] == sent.channel]
    assert len(posts) == 1
    assert "checking" in posts[0].args["text"].lower()
    assert updates and all(
        u.args["ts"] == bot.slack.channel_messages(sent.channel)[0]["ts"] for u in updates
    )


def test_health_all_checks_every_environment_at_once(
    bot: BotProcess, demo: DemoService, demo_b: DemoService
) -> None:
    # Both services answer slowly; if the bot checked one after the other, the two services'
    # request intervals could not overlap.
    demo.set_faults(latency_ms=700)
    demo_b.set_faults(latency_ms=700)
    sent = bot.command("/health", "all")
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    text = report_text(final_report(bot.slack, sent.channel))
    for name in ("local", "dev", "staging"):
        assert f"*{name}* — Degraded" in text
    assert "*production* — Unhealthy" in text
    assert "connection refused" in text

    a = sorted((r for r in demo.requests() if r["path"] == "/healthz"), key=lambda r: r["started"])
    b = sorted(
        (r for r in demo_b.requests() if r["path"] == "/healthz"), key=lambda r: r["started"]
    )
    # Slow and nothing else: each of local, staging (service A) and dev (B) got a second
    # request once the first ones were in (second_reading in bot/runbook/health/health.py).
    assert (len(a), len(b)) == (4, 2)
    for reading in (a[:2] + b[:1], a[2:] + b[1:]):
        assert max(r["started"] for r in reading) < min(r["finished"] for r in reading)


@pytest.mark.serial
def test_acks_stay_immediate_while_many_checks_run(bot: BotProcess, demo: DemoService) -> None:
    # More slow commands at once than Bolt's 5 listener threads: the sixth must not wait.
    demo.set_faults(latency_ms=1500)

    def send(_: int) -> tuple[Sent, float]:
        sent = bot.command("/health", "staging")
        return sent, time.time()

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(send, range(12)))
    assert all(s.response.status_code == 200 for s, _ in results)
    assert max(s.seconds for s, _ in results) < SLACK_ACK_DEADLINE_S
    for s, _ in results:
        assert "Degraded" in report_text(final_report(bot.slack, s.channel))
    # Causal order, not a stopwatch: every ack reached Slack before the service had finished
    # answering any of the checks — the work ran after the ack, never in front of it.
    first_answer = min(r["finished"] for r in demo.requests() if r["path"] == "/healthz")
    assert max(acked_at for _, acked_at in results) < first_answer


@pytest.mark.parametrize(
    "text",
    [
        "nosuchenv",
        "x" * 5000,
        "staging; rm -rf /",
        "$(touch /tmp/pwned)",
        "`id`",
        "staging && reboot",
        "<@U0CTO> <!channel>",
    ],
    ids=["unknown-env", "5000-chars", "semicolon", "subshell", "backticks", "and", "mentions"],
)
def test_bad_input_gets_usage_privately_and_runs_nothing(
    bot: BotProcess, demo: DemoService, text: str
) -> None:
    sent = bot.command("/health", text)
    assert sent.response.status_code == 200
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"]
    assert block_kit_errors(reply["blocks"]) == []
    rendered = json.dumps(reply)
    assert "<@U0CTO>" not in rendered and "<!channel>" not in rendered
    assert len(rendered) < 3000

    # A valid command afterwards works as a barrier: once its report is complete, anything the
    # bad one had started would have shown by then.
    barrier = bot.command("/health", "staging")
    final_report(bot.slack, barrier.channel)
    assert bot.slack.channel_messages(sent.channel) == []
    assert len([r for r in demo.requests() if r["path"] == "/healthz"]) == 1


def test_help_lists_usage_and_runs_nothing(bot: BotProcess, demo: DemoService) -> None:
    sent = bot.command("/health", "help")
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "/health [<env>|all]" in reply["text"]
    assert demo.requests() == []


@pytest.mark.parametrize("problem", ["wrong-signature", "no-signature", "stale", "future"])
def test_unsigned_or_stale_requests_get_401_and_run_nothing(
    bot: BotProcess, demo: DemoService, problem: str
) -> None:
    channel = new_channel()
    body = slash_command_body(
        "/health", "staging", channel_id=channel, response_url=bot.slack.response_url()
    )
    now = int(time.time())
    headers = {
        "wrong-signature": signed_headers("not-the-secret", body),
        "no-signature": {"Content-Type": "application/x-www-form-urlencoded"},
        "stale": signed_headers(SIGNING_SECRET, body, timestamp=now - 6 * 60),
        "future": signed_headers(SIGNING_SECRET, body, timestamp=now + 6 * 60),
    }[problem]
    response, _ = bot.post_signed(body, headers)
    assert response.status_code == 401

    barrier = bot.command("/health", "staging")
    final_report(bot.slack, barrier.channel)
    assert bot.slack.channel_messages(channel) == []
    assert len([r for r in demo.requests() if r["path"] == "/healthz"]) == 1
    store = Store(bot.database_url)
    try:
        assert all(entry.channel_id != channel for entry in store.audit_entries(limit=1000))
    finally:
        store.close()


def test_check_again_button_updates_the_same_message(bot: BotProcess, demo: DemoService) -> None:
    sent = bot.command("/health", "staging")
    first = final_report(bot.slack, sent.channel)
    assert "Healthy" in report_text(first)

    demo.set_faults(healthz_status=503)
    updates_before = len(bot.slack.calls_to("chat.update"))
    pressed = bot.press("health_recheck", "staging", channel=sent.channel, message_ts=first["ts"])
    assert pressed.response.status_code == 200

    def rechecked(fake: SlackFake) -> dict[str, Any] | None:
        updates = fake.calls_to("chat.update")[updates_before:]
        final = [
            u
            for u in updates
            if u.args["ts"] == first["ts"] and "Unhealthy" in u.args.get("text", "")
        ]
        return final[-1].args if final else None

    update = bot.slack.wait_for(rechecked)
    assert update["channel"] == sent.channel
    assert len(bot.slack.channel_messages(sent.channel)) == 1


def test_commands_are_audited_and_counted(bot: BotProcess) -> None:
    sent = bot.command("/health", "staging", user_id="U0AUDIT")
    final_report(bot.slack, sent.channel)
    bad = bot.command("/health", "nosuchenv", user_id="U0AUDIT")

    def audited() -> list[Any]:
        store = Store(bot.database_url)
        try:
            entries = [e for e in store.audit_entries(limit=1000) if e.user_id == "U0AUDIT"]
        finally:
            store.close()
        return entries

    # The audit row is finished right after the report's last update; wait on the fake for a
    # later event (a barrier command) rather than on the clock.
    barrier = bot.command("/health", "local")
    final_report(bot.slack, barrier.channel)
    entries = {e.channel_id: e for e in audited()}
    ok = entries[sent.channel]
    assert (ok.command, ok.text, ok.outcome) == ("/health", "staging", "ok")
    assert "Healthy" in ok.result
    assert ok.finished_at is not None and ok.finished_at >= ok.started_at
    usage = entries[bad.channel]
    assert (usage.outcome, usage.text) == ("usage", "nosuchenv")

    families = {f.name: f for f in text_string_to_metric_families(bot.metrics())}
    commands = {
        (s.labels["command"], s.labels["outcome"]): s.value
        for s in families["eventmesh_bot_commands"].samples
        if s.name.endswith("_total")
    }
    assert commands[("/health", "ok")] >= 1
    assert commands[("/health", "usage")] >= 1
    ack_count = [
        s
        for s in families["eventmesh_bot_ack_seconds"].samples
        if s.name.endswith("_count") and s.labels["command"] == "/health"
    ]
    assert ack_count and ack_count[0].value >= 3
    checks = [
        s
        for s in families["eventmesh_bot_health_checks"].samples
        if s.name.endswith("_total") and s.labels["environment"] == "staging"
    ]
    assert sum(s.value for s in checks) >= 1


def test_healthz_and_metrics_endpoints(running_bot: BotProcess) -> None:
    health = running_bot.http.get(f"{running_bot.url}/healthz").json()
    assert health["status"] == "healthy"
    assert health["version"]
    metrics = running_bot.http.get(f"{running_bot.url}/metrics")
    assert metrics.status_code == 200
    # Build info the Prometheus way: a gauge-typed sample at 1 whose labels carry the version.
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    build = families["eventmesh_bot_build_info"]
    assert build.type == "gauge"
    assert [(s.name, s.labels, s.value) for s in build.samples] == [
        ("eventmesh_bot_build_info", {"version": health["version"]}, 1.0)
    ]
