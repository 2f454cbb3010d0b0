"""/health: is EventMesh up? The runbook's health check, watch, resources, metrics report, and
its Troubleshooting: diagnose and logs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from bot.config import Config, Environment, parse_duration
from bot.runbook.health.log_search import DEFAULT_LINES, MAX_LINES, LogQuery, Which
from bot.runbook.health.metrics_report import DEFAULT_BUILDS, MAX_BUILDS
from bot.runbook.health.watch import DEFAULT_WATCH, LONGEST_WATCH, WatchRefused
from bot.slack.access import Allow, Usage
from bot.slack.blocks import duration_text, echo, notice
from bot.slack.changes.restart import restart_service
from bot.slack.dispatch import Context, action, command
from bot.slack.health.diagnose_blocks import LOGS_ACTION, RESTART_ACTION, ROLL_BACK_ACTION
from bot.slack.health.diagnose_report import report_diagnosis
from bot.slack.health.health_report import report_health
from bot.slack.health.health_watch import watch_health
from bot.slack.health.logs_report import report_logs
from bot.slack.health.metrics_report import report_metrics
from bot.slack.health.resources_report import report_resources, watch_resources
from bot.slack.health.watch_blocks import STOP_ACTION
from bot.slack.services import Services
from handlers.rollback import roll_back

MAX_TEXT = 200  # longer than any valid /health text; anything past it is refused unread
BUILD_COUNT = re.compile(r"[0-9]{1,4}")
LINE_COUNT = re.compile(r"[0-9]{1,5}")
MAX_MATCH = 100  # characters of text to look for
# `<env> logs [rest]`, the rest kept as typed: the text after `matching` keeps its spacing.
LOGS = re.compile(r"\s*(\S+)\s+logs(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)
WORD_AND_REST = re.compile(r"(\S+)(?:\s+(.*))?", re.DOTALL)


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


@dataclass(frozen=True)
class DiagnoseRequest:
    env: Environment


@dataclass(frozen=True)
class LogsRequest:
    env: Environment
    query: LogQuery


HealthRequest = (
    CheckRequest | WatchRequest | ResourcesRequest | ReportRequest | DiagnoseRequest | LogsRequest
)


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
    may be called that: bot/config/fields.py RESERVED_NAMES); `watch`, `resources`, `diagnose` and
    `logs` come only second, after an environment's name, so environments called so are
    still addressed unambiguously. (`logs` is parsed from the text as typed: parse_logs.)
    """
    lowered = [word.lower() for word in words]
    if lowered[:1] == ["report"]:
        return _report(words[1:])
    if lowered[1:] == ["diagnose"]:
        env = _one_environment(words[0], config, "diagnose")
        return env if isinstance(env, str) else DiagnoseRequest(env)
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


def parse_logs(text: str, config: Config) -> LogsRequest | str:
    """`<env> logs [errors|warnings] [N] [matching <text>]`, from the text as typed.

    The text after `matching` is taken whole (inner spacing kept, the ends trimmed): it is
    matched literally, never as a pattern, and never reaches a shell (log_search.py).
    """
    found = LOGS.fullmatch(text)
    if found is None:
        return f"/health does not understand {echo(text)}."
    env = _one_environment(found[1], config, "logs")
    if isinstance(env, str):
        return env
    which, count, match, rest = Which.ALL, None, None, found[2] or ""
    while rest.strip():
        step = WORD_AND_REST.fullmatch(rest.strip())
        assert step is not None
        word, rest = step[1], step[2] or ""
        lowered = word.lower()
        if lowered == "matching":
            match = rest.strip()
            if not match:
                return "`matching` needs the text to look for after it."
            if len(match) > MAX_MATCH:
                return f"Look for at most {MAX_MATCH} characters after `matching`."
            break
        if lowered in ("errors", "warnings") and which is Which.ALL and count is None:
            which = Which(lowered)
        elif LINE_COUNT.fullmatch(word) and count is None:
            count = int(word)
            if not 1 <= count <= MAX_LINES:
                return f"{echo(word)} lines: ask for 1 to {MAX_LINES:,}."
        else:
            return (
                f"/health {env.name} logs does not understand {echo(word)}: "
                "[errors|warnings] [N] [matching <text>], in that order."
            )
    return LogsRequest(env, LogQuery(which, count or DEFAULT_LINES, match))


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
        if not await ctx.hold_environment(env.name, f"/health {env.name} resources"):
            return
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


async def diagnose(ctx: Context, env: Environment) -> None:
    """Open to everyone, like /health; seconds to a minute of SSH: the long lane."""
    if not await ctx.hold_environment(env.name, f"/health {env.name} diagnose"):
        return
    await ctx.ack()
    services = ctx.services
    ctx.hand_off(
        lambda: report_diagnosis(
            ctx.conversation,
            services.config,
            services.health,
            services.store,
            env,
            requested_by=ctx.user_id,
        ),
        lane="long",
    )


async def logs(ctx: Context, env: Environment, query: LogQuery) -> None:
    if not await ctx.hold_environment(env.name, f"/health {env.name} logs"):
        return
    await ctx.ack()
    ctx.hand_off(
        lambda: report_logs(ctx.conversation, env, ctx.config.ssh, query, requested_by=ctx.user_id),
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
        then="limits.watches_per_user of the bot's 50",
    ),
    Usage(
        "/health <env> resources [duration]",
        "CPU, memory, disk, load and top processes of the environment's hosts: one snapshot, "
        "or kept current for the duration (at most 1h), with a Stop button",
        then="a snapshot: one SSH-opening command per environment at a time; a watch: "
        "limits.watches_per_user",
    ),
    Usage(
        "/health report [N]",
        "build time, test pass rate and cache hit rate of the last N builds "
        f"(default {DEFAULT_BUILDS}, at most {MAX_BUILDS}), with a chart",
    ),
    Usage(
        "/health <env> diagnose",
        "the runbook's Troubleshooting on every host: the service's process, who holds its "
        "port, healthz from the host itself, log errors by type, disk, memory, load; a verdict "
        "naming the runbook's common issue, with Logs and Roll back buttons",
        then="one SSH-opening command per environment at a time",
    ),
    Usage(
        "/health <env> logs [errors|warnings] [N] [matching <text>]",
        f"the last N lines of the log on every host (default {DEFAULT_LINES}, at most "
        f"{MAX_LINES:,}), or only errors or warnings, or only lines containing the text "
        "(literally); counts by type; long answers as a file in the thread",
        then="one SSH-opening command per environment at a time",
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
    if len(words) >= 2 and words[1].lower() == "logs":
        request: HealthRequest | str = parse_logs(text, ctx.config)
    else:
        request = parse(words, ctx.config)
    if isinstance(request, str):
        return await ctx.answer_usage(request)
    if isinstance(request, CheckRequest):
        return await check(ctx, request.targets, request.scope)
    if isinstance(request, WatchRequest):
        return await watch(ctx, request.env, request.duration)
    if isinstance(request, ResourcesRequest):
        return await resources(ctx, request.env, request.duration)
    if isinstance(request, DiagnoseRequest):
        return await diagnose(ctx, request.env)
    if isinstance(request, LogsRequest):
        return await logs(ctx, request.env, request.query)
    await report(ctx, request.builds)


@action("health_recheck", "Check again", allow=Allow("everyone"))
async def recheck(ctx: Context) -> None:
    """The report's "Check again" button: the same check, updating the same message."""
    targets = resolve(ctx.request.text, ctx.config)
    if isinstance(targets, str):
        # The config changed since the report was posted.
        return await ctx.answer_usage(targets)
    await check(ctx, targets, ctx.request.text)


async def _started_it(services: Services, value: str, user_id: str) -> bool:
    """Whoever started the watch; and anyone, once it has ended (the answer says so)."""
    return services.watches.started_by(value) in (None, user_id)


@action(
    STOP_ACTION, "Stop", allow=Allow("responders", also="whoever started it", owner=_started_it)
)
async def stop_watch(ctx: Context) -> None:
    """A watch's Stop button: the watch ends now and its summary says who stopped it."""
    stopped = ctx.services.watches.stop(ctx.request.value, ctx.user_id)
    if stopped is None:
        return await ctx.answer_usage("That watch has already ended.")
    await ctx.ack()
    ctx.result = f"stopped the {stopped.kind} watch of {stopped.environment}"


def _button_environment(ctx: Context) -> Environment | str:
    env = ctx.config.environments.get(ctx.request.value)
    if env is None:  # the config changed since the diagnosis was posted
        return f"{echo(ctx.request.value)} is no longer an environment in the config."
    return env


@action(
    LOGS_ACTION,
    "Logs",
    allow=Allow("everyone", then="one SSH-opening command per environment at a time"),
)
async def diagnosis_logs(ctx: Context) -> None:
    """A diagnosis's Logs button: `/health <env> logs errors`, posted in the same channel."""
    env = _button_environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await logs(ctx, env, LogQuery(Which.ERRORS))


@action(
    ROLL_BACK_ACTION,
    "Roll back",
    allow=Allow("deployers", then="requires_approval: an approver decides"),
)
async def diagnosis_roll_back(ctx: Context) -> None:
    """A diagnosis's Roll back button: exactly `/rollback <env>` (deployers; approval)."""
    env = _button_environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    await roll_back(ctx, env, None)


@action(
    RESTART_ACTION,
    "Restart service",
    allow=Allow("deployers", then="requires_approval: an approver decides (never the requester)"),
)
async def diagnosis_restart(ctx: Context) -> None:
    """A diagnosis's Restart service: the service command on each host, verified healthy;
    locked, recorded and audited as a deploy (deployers; approval where required)."""
    env = _button_environment(ctx)
    if isinstance(env, str):
        return await ctx.answer_usage(env)
    if env.requires_approval:
        await ctx.ack(notice(f"{env.name} needs an approver: asking.", ":hourglass_flowing_sand:"))
    else:
        await ctx.ack()
    services, conversation, user = ctx.services, ctx.conversation, ctx.user_id
    ctx.hand_off(lambda: restart_service(services, env, user, conversation), lane="long")
