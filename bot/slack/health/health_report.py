"""/health's background work: run the checks and keep one message up to date."""

from __future__ import annotations

from collections.abc import Sequence

from bot.config import Environment
from bot.runbook.health.health import HealthChecker, HealthResult
from bot.slack import blocks
from bot.slack.chat import Conversation, Message, MessageRef
from bot.slack.live_message import LiveMessage


async def report_health(
    conversation: Conversation,
    checker: HealthChecker,
    envs: Sequence[Environment],
    *,
    scope: str,
    requested_by: str,
    ref: MessageRef | None = None,
) -> str:
    """Check envs at once, showing each result as it lands; returns a one-line summary."""
    results: dict[str, HealthResult | None] = {env.name: None for env in envs}
    thresholds = checker.thresholds.health_response_ms

    def render() -> Message:
        return blocks.health_report(
            results,
            scope=scope,
            requested_by=requested_by,
            warning_ms=thresholds.warning,
            critical_ms=thresholds.critical,
        )

    live = LiveMessage(conversation, ref=ref)
    await live.show(render())
    async for batch in checker.check_many(envs):
        for result in batch:
            results[result.environment] = result
        # Rendered only when an update is due: 200 results must not cost 200 renders.
        await live.show(render)
    final = render()
    await live.finish(final)
    return final.text
