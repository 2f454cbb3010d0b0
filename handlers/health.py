"""/health: is EventMesh up? The runbook's health check for one environment or all of them."""

from __future__ import annotations

from bot.config import Config, Environment
from bot.slack.blocks import echo
from bot.slack.dispatch import Context, Usage, action, command
from bot.slack.health_report import report_health

MAX_TEXT = 200  # longer than any valid /health text; anything past it is refused unread


def resolve(word: str, config: Config) -> list[Environment] | str:
    """The environments a word names ('all' or an environment), or what is wrong with it."""
    if word == "all":
        return list(config.environments.values())
    env = config.environments.get(word.lower())
    if env is None:
        known = ", ".join(config.environments)
        return f"Unknown environment {echo(word)}. Known: {known}, or `all`."
    return [env]


async def check(ctx: Context, targets: list[Environment], scope: str) -> None:
    """Ack, then check on the worker pool; a button press updates its own message."""
    await ctx.ack()
    ctx.hand_off(
        lambda: report_health(
            ctx.conversation,
            ctx.services.health,
            targets,
            scope=scope,
            requested_by=ctx.user_id,
            ref=ctx.request.message_ref,
        )
    )


@command(
    "/health",
    Usage("/health [<env>|all]", "healthz, status and metrics of one environment, or all at once"),
    Usage("/health help", "show this help"),
)
async def health(ctx: Context) -> None:
    """Check EventMesh health by the runbook's rules: Healthy, Degraded or Unhealthy."""
    text = ctx.request.text
    if len(text) > MAX_TEXT:
        return await ctx.answer_usage(f"That is {len(text):,} characters; /health takes one word.")
    words = text.split()
    if words == ["help"]:
        return await ctx.answer_help()
    if len(words) > 1:
        return await ctx.answer_usage(f"/health takes one environment, not {echo(text)}.")
    scope = words[0].lower() if words else "all"
    targets = resolve(scope, ctx.config)
    if isinstance(targets, str):
        return await ctx.answer_usage(targets)
    await check(ctx, targets, scope)


@action("health_recheck")
async def recheck(ctx: Context) -> None:
    """The report's "Check again" button: the same check, updating the same message."""
    targets = resolve(ctx.request.text, ctx.config)
    if isinstance(targets, str):
        # The config changed since the report was posted.
        return await ctx.answer_usage(targets)
    await check(ctx, targets, ctx.request.text)
