"""Names in the config ('#ops-alerts', '@alice', alice@example.com) turned into Slack ids.

Once, at start, before the bot serves: the handlers only ever see ids. Channels come from
`conversations.list` (public and private, every page), emails from `users.lookupByEmail`,
@handles from `users.list` (a member's username or display name). What Slack answers is
remembered in the store (bot/store/names.py): a restart while Slack is unreachable uses the
ids of the last start. A name Slack does not know is a config error naming its key, as is a
name that neither Slack nor the store can resolve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Config, ConfigError
from bot.store import Store, StoreError

log = logging.getLogger(__name__)

PAGE = 200  # Slack's advice for conversations.list and users.list
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)
# Slack's errors that say nothing about the names: try again later, from the cache meanwhile.
_TRANSIENT = {"ratelimited", "fatal_error", "internal_error", "service_unavailable"}


class _Unreachable(Exception):
    """Slack did not answer (or answered that it cannot now): fall back on the cache."""


@dataclass
class Lookup:
    """What Slack said about the names: their ids, or what is wrong with each."""

    ids: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None  # why Slack could not be asked (None: it answered)


def is_channel_name(name: str) -> bool:
    return name.startswith("#")


def is_email(name: str) -> bool:
    return not name.startswith("@") and "@" in name


async def look_up(client: AsyncWebClient, names: Iterable[str]) -> Lookup:
    """Ask Slack for the id of each name (channels, emails and @handles at once)."""
    names = list(names)
    channels = [n for n in names if is_channel_name(n)]
    emails = [n for n in names if is_email(n)]
    handles = [n for n in names if n not in channels and n not in emails]
    lookup = Lookup()
    try:
        async with asyncio.TaskGroup() as group:  # the first _Unreachable cancels the rest
            scope = "channels:read and groups:read"
            group.create_task(_guard(lookup, channels, scope, _channels(client, channels)))
            for email in emails:
                group.create_task(
                    _guard(lookup, [email], "users:read.email", _email(client, email))
                )
            group.create_task(_guard(lookup, handles, "users:read", _handles(client, handles)))
    except* _Unreachable as unreachable:
        lookup = Lookup(unreachable=str(unreachable.exceptions[0]))
    if lookup.unreachable is not None:
        return lookup
    for name in names:
        if name not in lookup.ids and name not in lookup.problems:
            lookup.problems[name] = _unknown(name)
    return lookup


async def _guard(
    lookup: Lookup,
    names: list[str],
    scope: str,
    asking: Awaitable[dict[str, str | set[str]]],
) -> None:
    """Run one question, turning Slack's refusals into problems of the names it was about."""
    try:
        answers = await asking
    except SlackApiError as exc:
        error = _error_of(exc)
        status = getattr(exc.response, "status_code", 200)
        if error in _TRANSIENT or status >= 500:
            raise _Unreachable(f"Slack answered {error}") from exc
        if error == "missing_scope":
            data = getattr(exc.response, "data", None)
            needed = (data.get("needed") if isinstance(data, dict) else None) or scope
            problem = (
                f"cannot be resolved: the app lacks the {needed} scope — add it (manifest.yml "
                "lists it) and reinstall the app, or write the id"
            )
        else:
            problem = f"cannot be resolved: Slack answered {error}"
        lookup.problems.update((name, problem) for name in names)
        return
    except _UNREACHABLE as exc:
        raise _Unreachable(f"no answer from Slack: {exc or type(exc).__name__}") from exc
    for name, answer in answers.items():
        if isinstance(answer, str):
            lookup.ids[name] = answer
        elif len(answer) > 1:
            lookup.problems[name] = (
                f"{name} is the name of {len(answer)} people ({', '.join(sorted(answer))}): "
                "write their email or member id"
            )


def _error_of(exc: SlackApiError) -> str:
    """Slack's error code; a proxy's non-JSON answer (a 503 page) has none."""
    data = getattr(exc.response, "data", None)
    return str(data.get("error", "unknown_error")) if isinstance(data, dict) else "no_json"


async def _pages(
    call: Callable[..., Awaitable[Any]], items: str, **args: Any
) -> list[dict[str, Any]]:
    """Every item of a paginated list method (cursor by cursor)."""
    found: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await call(limit=PAGE, cursor=cursor or None, **args)
        found.extend(page.get(items) or [])
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            return found


async def _channels(client: AsyncWebClient, names: list[str]) -> dict[str, str | set[str]]:
    if not names:
        return {}
    channels = await _pages(
        client.conversations_list, "channels", types="public_channel,private_channel"
    )
    by_name = {str(c.get("name")): str(c["id"]) for c in channels if c.get("id")}
    return {n: by_name[n[1:]] for n in names if n[1:] in by_name}


async def _email(client: AsyncWebClient, email: str) -> dict[str, str | set[str]]:
    try:
        answer = await client.users_lookupByEmail(email=email)
    except SlackApiError as exc:
        if _error_of(exc) == "users_not_found":
            return {}
        raise
    user = answer.get("user") or {}
    return {email: str(user["id"])} if user.get("id") and not user.get("deleted") else {}


async def _handles(client: AsyncWebClient, names: list[str]) -> dict[str, str | set[str]]:
    """@handle: a member's username, else their display name (which need not be unique)."""
    if not names:
        return {}
    members = [m for m in await _pages(client.users_list, "members") if not m.get("deleted")]
    found: dict[str, str | set[str]] = {}
    for name in names:
        handle = name[1:].casefold()
        by_username = {str(m["id"]) for m in members if str(m.get("name", "")).casefold() == handle}
        shown = {
            str(m["id"])
            for m in members
            if str((m.get("profile") or {}).get("display_name", "")).casefold() == handle
        }
        ids = by_username or shown
        if ids:
            found[name] = next(iter(ids)) if len(ids) == 1 else ids
    return found


def _unknown(name: str) -> str:
    if is_channel_name(name):
        return (
            f"no channel {name} that the bot can see — check the spelling (a private channel "
            "must /invite the bot first)"
        )
    if is_email(name):
        return f"no member of this workspace has the email {name}"
    return f"no member of this workspace is {name} (username or display name)"


async def resolve_names(config: Config, client: AsyncWebClient, store: Store) -> Config:
    """The config with every name replaced by its Slack id; ConfigError names each one that
    cannot be resolved (by Slack, or while Slack is unreachable, by the store)."""
    names = config.names()
    if not names:
        return config
    lookup = await look_up(client, names)
    if lookup.unreachable is None:
        ids, problems = lookup.ids, lookup.problems
        try:
            await asyncio.to_thread(store.remember_ids, ids)
        except StoreError as exc:
            log.warning("the resolved Slack names were not remembered: %s", exc)
    else:
        ids = await _remembered(store, names)
        why = f"Slack is unreachable ({lookup.unreachable})"
        log.warning("%s: using the ids an earlier start resolved for the config's names", why)
        problems = {
            name: f"cannot be resolved: {why} and no earlier start resolved it"
            for name in names
            if name not in ids
        }
    if problems:
        errors = [
            ConfigError(", ".join(names[name]), problem) for name, problem in problems.items()
        ]
        raise ConfigError(errors[0].key, errors[0].problem, tuple(errors[1:]))
    log.info(
        "Slack names resolved: %s", ", ".join(f"{name} → {ids[name]}" for name in sorted(names))
    )
    return config.with_ids(ids)


async def _remembered(store: Store, names: Iterable[str]) -> dict[str, str]:
    try:
        return await asyncio.to_thread(store.cached_ids, names)
    except StoreError as exc:
        log.warning("the remembered Slack names cannot be read: %s", exc)
        return {}
