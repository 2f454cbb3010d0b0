"""/health: is EventMesh up? The runbook's health check, watch, resources and metrics report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from bot.config import Config, Environment, parse_duration
from bot.runbook.health.metrics_report import DEFAULT_BUILDS, MAX_BUILDS
from bot.runbook.health.watch import DEFAULT_WATCH, LONGEST_WATCH, WatchRefused
from bot.slack.access import Usage
from bot.slack.blocks import duration_text, echo
from bot.slack.dispatch import Context, action, command
from bot.slack.health.health_report import report_health
from bot.slack.health.health_watch import watch_health
from bot.slack.health.metrics_report import report_metrics
from bot.slack.health.resources_report import report_resources, watch_resources
from bot.slack.health.watch_blocks import STOP_ACTION

MAX_TEXT = 200  # longer than any valid /health text; anything past it is refused unread
BUILD_COUNT = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True)
class CheckRequest:
    targets: list[Environment]
    scope: str


@dataclass(frozen=True)
class WatchRequest:
    env: Environment
    duration: timedelta


@dataclass(frozen=True)
class ResourcesRequest:
    env: Environment
    duration: timedelta | None  # None: one snapshot


@dataclass(frozen=True)
class ReportRequest:
    builds: int


HealthRequest = CheckRequest | WatchRequest | ResourcesRequest | ReportRequest


def resolve(word: str, config: Config) -> list[Environment] | str:
    """The environments a word names ('all' or an environment), or what is wrong with it."""
    if word == "all":
        return list(config.environments.values())
    env = config.environments.get(word.lower())
    if env is None:
        known = ", ".join(config.environments)
        return f"Unknown environment {echo(word)}. Known: {known}, or `all`."
    return [env]


def parse(words: list[str], config: Config) -> HealthRequest | str:
    """What `/health <words>` asks for, or what is wrong with it (then nothing runs).

    `report` is the one word that may come first besides an environment (no environment
    may be called that: bot/config.py RESERVED_NAMES); `watch` and `resources` come only
    second, after an environment's name, so environments called `watch` or `resources` are
    still addressed unambiguously.
    """
    lowered = [word.lower() for word in words]
    if lowered[:1] == ["report"]:
        return _report(words[1:])
    if len(words) <= 1:
        scope = lowered[0] if words else "all"
        targets = resolve(scope, config)
        return targets if isinstance(targets, str) else CheckRequest(targets, scope)
    if lowered[1] in ("watch", "resources") and len(words) <= 3:
        env = _one_environment(words[0], config, lowered[1])
        if isinstance(env, str):
            return env
        if lowered[1] == "resources" and len(words) == 2:
            return ResourcesRequest(env, None)
        duration = _duration(words[2] if len(words) == 3 else None)
        if isinstance(duration, str):
            return duration
        if lowered[1] == "resources":
            return ResourcesRequest(env, duration)
        return WatchRequest(env, duration)
    return f"/health does not understand {echo(' '.join(words))}."


def _one_environment(word: str, config: Config, what: str) -> Environment | str:
    if word.lower() == "all":
        return f"`{what}` follows one environment; name it instead of `all`."
    targets = resolve(word, config)
    return targets if isinstance(targets, str) else targets[0]


def _duration(word: str | None) -> timedelta | str:
    if word is None:
        return DEFAULT_WATCH
    try:
        duration = parse_duration(word.lower())
    except ValueError:
        return f"{echo(word)} is not a duration (use 30s, 10m, 1h)."
    if duration <= timedelta(0):
        return "A watch needs a duration longer than zero."
    if duration > LONGEST_WATCH:
        return f"{echo(word)} is too long: a watch lasts at most {duration_text(LONGEST_WATCH)}."
    return duration


def _report(words: list[str]) -> ReportRequest | str:
    if not words:
        return ReportRequest(DEFAULT_BUILDS)
    if len(words) > 1:
        return f"/health report takes one number, not {echo(' '.join(words))}."
    word = words[0]
    if BUILD_COUNT.fullmatch(word) is None or not 1 <= int(word) <= MAX_BUILDS:
        return f"{echo(word)} is not a number of builds (a whole number from 1 to {MAX_BUILDS})."
    return ReportRequest(int(word))


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


async def watch(ctx: Context, env: Environment, duration: timedelta) -> None:
    """Ack, then watch in the long lane: minutes of work never hold a short worker."""
    watches = ctx.services.watches
    try:
        running = watches.start(
            "health",
            env.name,
            duration=duration,
            interval=env.check_interval,
            started_by=ctx.user_id,
        )
    except WatchRefused as exc:
        return await ctx.deny(str(exc))
    await ctx.ack()
    ctx.hand_off(
        lambda: watch_health(ctx.conversation, ctx.services.health, env, running, watches),
        lane="long",
    )


async def resources(ctx: Context, env: Environment, duration: timedelta | None) -> None:
    """One snapshot in the short lane (seconds); a watch of them in the long lane."""
    config = ctx.config
    if duration is None:
        await ctx.ack()
        ctx.hand_off(
            lambda: report_resources(
                ctx.conversation, env, config.ssh, config.thresholds, requested_by=ctx.user_id
            )
        )
        return
    watches = ctx.services.watches
    try:
        running = watches.start(
            "resources",
            env.name,
            duration=duration,
            interval=env.check_interval,
            started_by=ctx.user_id,
        )
    except WatchRefused as exc:
        return await ctx.deny(str(exc))
    await ctx.ack()
    ctx.hand_off(
        lambda: watch_resources(
            ctx.conversation, env, config.ssh, config.thresholds, running, watches
        ),
        lane="long",
    )


async def report(ctx: Context, builds: int) -> None:
    await ctx.ack()
    ctx.hand_off(
        lambda: report_metrics(
            ctx.conversation,
            ctx.config.metrics.dir,
            builds,
            ctx.config.thresholds.build_minutes,
            requested_by=ctx.user_id,
        )
    )


@command(
    "/health",
    Usage("/health [<env>|all]", "healthz, status and metrics of one environment, or all at once"),
    Usage(
        "/health <env> watch [duration]",
        "check every check_interval for a while (default 5m, at most 1h; e.g. 30s, 10m), "
        "one message updated in place, with a Stop button",
    ),
    Usage(
        "/health <env> resources [duration]",
        "CPU, memory, disk, load and top processes of the environment's hosts: one snapshot, "
        "or kept current for the duration (at most 1h), with a Stop button",
    ),
    Usage(
        "/health report [N]",
        "build time, test pass rate and cache hit rate of the last N builds "
        f"(default {DEFAULT_BUILDS}, at most {MAX_BUILDS}), with a chart",
    ),
    Usage("/health help", "show this help"),
)
async def health(ctx: Context) -> None:
    """Check EventMesh health by the runbook's rules: Healthy, Degraded or Unhealthy."""
    text = ctx.request.text
    if len(text) > MAX_TEXT:
        return await ctx.answer_usage(
            f"That is {len(text):,} characters; /health takes a few words."
        )
    words = text.split()
    if words == ["help"]:
        return await ctx.answer_help()
    request = parse(words, ctx.config)
    if isinstance(request, str):
        return await ctx.answer_usage(request)
    if isinstance(request, CheckRequest):
        return await check(ctx, request.targets, request.scope)
    if isinstance(request, WatchRequest):
        return await watch(ctx, request.env, request.duration)
    if isinstance(request, ResourcesRequest):
        return await resources(ctx, request.env, request.duration)
    await report(ctx, request.builds)


@action("health_recheck")
async def recheck(ctx: Context) -> None:
    """The report's "Check again" button: the same check, updating the same message."""
    targets = resolve(ctx.request.text, ctx.config)
    if isinstance(targets, str):
        # The config changed since the report was posted.
        return await ctx.answer_usage(targets)
    await check(ctx, targets, ctx.request.text)


@action(STOP_ACTION)
async def stop_watch(ctx: Context) -> None:
    """A watch's Stop button: the watch ends now and its summary says who stopped it."""
    stopped = ctx.services.watches.stop(ctx.request.value, ctx.user_id)
    if stopped is None:
        return await ctx.answer_usage("That watch has already ended.")
    await ctx.ack()
    ctx.result = f"stopped the {stopped.kind} watch of {stopped.environment}"
