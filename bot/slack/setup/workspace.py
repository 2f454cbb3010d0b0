"""The Slack side of `check-config --live`: the tokens, the channels and the people in the config.

- SLACK_BOT_TOKEN: `auth.test`; SLACK_APP_TOKEN (Socket Mode): `apps.connections.open`, which
  only hands out a connection URL; a signing secret cannot be checked without a request.
- Each `slack.*_channel`: `conversations.info` — it exists, is not archived, the bot is in it.
- Each user of `access` and `escalation.levels` (rotation members too): `users.info` —
  exists, not deactivated.
- Names (#channel, @handle, email) first resolved as a start resolves them (names.py).

A channel or user named under several keys is asked about once and reported once, naming
every key. Without a bot token nothing else can be asked: that is the one problem then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Config, is_slack_id
from bot.runbook.setup.checks import Problem, Report
from bot.settings import Settings
from bot.slack.setup.names import look_up
from bot.slack.web_api import create_web_client

AT_ONCE = 8  # users.info is Tier 4 (100+ a minute): a few at a time is well within it
_TOKEN_HINTS = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
    "SLACK_APP_TOKEN": "an app-level token (xapp-…) with connections:write, from the app's "
    "Basic Information page",
}
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)
_SCOPE = "missing_scope "  # how _ask says the app lacks a scope: "missing_scope users:read"


def _keys(keys: list[str]) -> str:
    return ", ".join(keys)


async def check_workspace(config: Config, settings: Settings) -> Report:
    """Tokens, channels and users, asked of Slack (SLACK_API_URL when set)."""
    report = Report()
    if not settings.app_token and not settings.signing_secret:
        report.problems.append(
            Problem(
                "SLACK_APP_TOKEN",
                "not set, nor SLACK_SIGNING_SECRET: set SLACK_APP_TOKEN for Socket Mode ("
                f"{_TOKEN_HINTS['SLACK_APP_TOKEN']}), or SLACK_SIGNING_SECRET for HTTP mode",
            )
        )
    if not settings.bot_token:
        report.problems.append(
            Problem(
                "SLACK_BOT_TOKEN",
                f"not set: {_TOKEN_HINTS['SLACK_BOT_TOKEN']} (channels and users not checked "
                "without it)",
            )
        )
        return report
    client = create_web_client(settings.bot_token, settings.api_url)
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        report.problems.append(_token_refused("SLACK_BOT_TOKEN", exc))
        return report
    except _UNREACHABLE as exc:
        where = "SLACK_API_URL" if settings.api_url else "Slack"
        why = f"cannot reach {client.base_url} ({exc or type(exc).__name__})"
        fix = "check this machine's network and proxy; nothing of Slack was checked"
        report.problems.append(Problem(where, f"{why} — {fix}"))
        return report
    bot = f"@{identity.get('user')}"
    report.found.append(f"Slack: SLACK_BOT_TOKEN is {bot} in {identity.get('team')}")
    if settings.app_token:
        try:
            await client.apps_connections_open(app_token=settings.app_token)
        except SlackApiError as exc:
            report.problems.append(_token_refused("SLACK_APP_TOKEN", exc))
    resolved = await _resolve(config, client, report)
    checked = await asyncio.gather(
        _each(_ids(resolved.channels()), lambda c: _channel_problem(client, c, bot)),
        _each(_ids(resolved.users()), lambda u: _user_problem(client, u)),
    )
    return Report.of(report, *checked)


async def _resolve(config: Config, client: AsyncWebClient, report: Report) -> Config:
    """The config's names resolved as a start resolves them; each one that is not, a problem
    (then not checked further)."""
    named = config.names()
    if not named:
        return config
    lookup = await look_up(client, named)
    if lookup.unreachable is not None:
        keys = _keys([key for keys in named.values() for key in keys])
        report.problems.append(Problem(keys, f"names not resolved: {lookup.unreachable}"))
    for name, problem in lookup.problems.items():
        report.problems.append(Problem(_keys(named[name]), problem))
    for name, slack_id in lookup.ids.items():
        report.found.append(f"Slack: {name} is {slack_id}")
    return config.with_ids(lookup.ids)


def _ids(named: dict[str, list[str]]) -> dict[str, list[str]]:
    """Only the ids: a name still here did not resolve, and is reported already."""
    return {item: keys for item, keys in named.items() if is_slack_id(item)}


def _token_refused(variable: str, exc: SlackApiError) -> Problem:
    error = exc.response.get("error", "unknown_error")
    return Problem(
        variable, f"Slack refused it ({error}): it must be {_TOKEN_HINTS[variable]} of this app"
    )


async def _each(
    named: Mapping[str, list[str]], problem_of: Callable[[str], Awaitable[str | None]]
) -> Report:
    """Ask about each id (a few at a time); one problem per id, naming all its keys."""
    limit = asyncio.Semaphore(AT_ONCE)

    async def ask(item: str) -> str | None:
        async with limit:
            return await problem_of(item)

    answers = await asyncio.gather(*(ask(item) for item in named))
    report = Report()
    scopes: set[str] = set()
    for keys, answer in zip(named.values(), answers, strict=True):
        if answer is None:
            continue
        if answer.startswith(_SCOPE):  # the app's problem, not this id's: once
            scopes.add(answer.removeprefix(_SCOPE))
        else:
            report.problems.append(Problem(_keys(keys), answer))
    for scope in sorted(scopes):
        report.problems.append(
            Problem(
                "SLACK_BOT_TOKEN",
                f"the app lacks the {scope} scope — add it (manifest.yml lists it) and "
                "reinstall the app to the workspace",
            )
        )
    return report


async def _ask(
    call: Callable[[], Awaitable[Any]], not_found: str, missing: str
) -> dict[str, Any] | str:
    """Slack's answer, or what is wrong: `missing` when Slack answers `not_found`, a missing
    scope as '<_SCOPE><scope>' (reported once for all), else Slack's error in a sentence."""
    try:
        return dict((await call()).data)
    except SlackApiError as exc:
        # A proxy's or Slack's 5xx page is not JSON: its data is text, not a dict.
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {exc.response.status_code}")
        if error == not_found:
            return missing
        if error == "missing_scope":
            return f"{_SCOPE}{data.get('needed', 'needed')}"
        return f"Slack answered {error}"
    except _UNREACHABLE as exc:
        return f"no answer from Slack ({exc or type(exc).__name__})"


async def _channel_problem(client: AsyncWebClient, channel_id: str, bot: str) -> str | None:
    answer = await _ask(
        lambda: client.conversations_info(channel=channel_id),
        "channel_not_found",
        f"no channel {channel_id} that the bot can see — use the id at the end of an existing "
        "channel's link (a private channel must /invite the bot first)",
    )
    if isinstance(answer, str):
        return answer
    channel = answer.get("channel") or {}
    name = f"#{channel.get('name') or channel_id}"
    if channel.get("is_archived"):
        return f"{name} ({channel_id}) is archived — unarchive it or name another channel"
    if not channel.get("is_member"):
        return f"the bot is not in {name} ({channel_id}) — /invite {bot} in {name}"
    return None


async def _user_problem(client: AsyncWebClient, user_id: str) -> str | None:
    answer = await _ask(
        lambda: client.users_info(user=user_id),
        "user_not_found",
        f"no user {user_id} in this workspace — use the member id from their profile "
        "(⋮ → Copy member ID)",
    )
    if isinstance(answer, str):
        return answer
    user = answer.get("user") or {}
    if user.get("deleted"):
        return f"{user_id} (@{user.get('name')}) is deactivated — name someone who is here"
    return None
