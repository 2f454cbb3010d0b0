"""Who may do what: one policy for every slash command and every button, from the config.

A rule is declared with its handler — a command's `Usage(…, role=…)` lines, a button's
`@action(…, allow=Allow(…))` — and the dispatcher (bot/slack/dispatch.py) applies it before
the handler runs; a refusal is answered privately, names the role, and is audited as denied.
A button cannot be declared without its rule. The roles:

- everyone: anyone in the workspace;
- responders: deployers, approvers, and the people on the escalation path — every level's
  `users`, every member of a level's rotation, and whoever an override puts on call now;
- deployers, approvers: `access.deployers`, `access.approvers`.

Some rules also name someone a record names (`also`: a watch's starter, a deployment's
requester), asked of the record through `owner`; and some flows check more on the record after
the rule let the press through (`then`: the requester may not approve their own request). Both
are written in the declaration so that the table in README "Security model" is generated from
the code (`policy_rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bot.clock import Clock, utc_now
from bot.config import Access, Config
from bot.slack.ack_reads import read_for_ack
from bot.store import StoreError
from bot.store.oncall import OnCallStore

log = logging.getLogger(__name__)

Role = Literal["everyone", "responders", "deployers", "approvers"]

ROLE_NAMES: dict[str, str] = {
    "everyone": "everyone",
    "responders": "responders",
    "deployers": "deployers",
    "approvers": "approvers",
}
# Where a refused person learns where the role comes from.
ROLE_SOURCES: dict[str, str] = {
    "responders": "deployers, approvers and the people on the escalation path "
    "(escalation.levels: users, rotation members, overrides in force)",
    "deployers": "access.deployers in the config",
    "approvers": "access.approvers in the config",
}

# (services, the button's value, the presser) → whether the record names the presser.
OwnerCheck = Callable[[Any, str, str], Awaitable[bool]]


def may_run(role: Role, access: Access, user_id: str) -> bool:
    """The config's part of a role (no store needed): exact for everyone, deployers and
    approvers; for responders, everyone the config names (not the overrides)."""
    if role == "deployers":
        return access.may_deploy(user_id)
    if role == "approvers":
        return access.may_approve(user_id)
    return role == "everyone"


@dataclass(frozen=True)
class Usage:
    """One line of a command's help: its syntax, what it does, and who may run it.

    The dispatcher finds the line a request is (by the syntax's words before the first `[`:
    literal words, `a|b` alternatives, `<env>` a configured environment, any other `<…>` any
    word) and applies its role. `then` says what the flow checks besides, for the table.
    """

    syntax: str
    summary: str
    role: Role = "everyone"
    then: str = ""


@dataclass(frozen=True)
class Allow:
    """Who may press a button: a role, or (`also`) someone its record names, asked through
    `owner`; `then` is what the flow checks on the record after the press is let through."""

    role: Role
    also: str = ""
    owner: OwnerCheck | None = None
    then: str = ""


def who(role: Role, also: str = "") -> str:
    """'deployers', 'responders or its starter'."""
    return f"{ROLE_NAMES[role]} or {also}" if also else ROLE_NAMES[role]


def refusal(role: Role, what: str, also: str = "") -> tuple[str, str]:
    """(the sentence audited, the hint shown after it): 'Only deployers may run /deploy
    staging.', '(access.deployers in the config)'."""
    return f"Only {who(role, also)} may {what}.", f"({ROLE_SOURCES.get(role, '')})"


# --- matching a command's text to its usage line ---------------------------------------------


def _required(syntax: str) -> list[str]:
    """The words of a usage after the command, up to the first optional part."""
    words = syntax.split()[1:]
    required = []
    for word in words:
        if word.startswith("["):
            break
        required.append(word)
    return required


def _word_matches(pattern: str, word: str, environments: Iterable[str]) -> bool | None:
    """True/False for a literal, None for a placeholder that matches (it is no literal)."""
    if "<" not in pattern:
        return word.lower() in pattern.lower().split("|")
    if pattern == "<env>":
        return None if word.lower() in environments else False
    return None


def usage_for(usages: Iterable[Usage], text: str, config: Config) -> tuple[Usage, str] | None:
    """The usage line `text` is, and the request as shown in a refusal ('/deploy staging',
    placeholders other than <env> shown as written, never the user's words); None if none
    matches (then the handler answers with the usage)."""
    words = text.split()
    environments = set(config.environments)
    best: tuple[tuple[int, int], Usage, str] | None = None
    for usage in usages:
        required = _required(usage.syntax)
        if len(words) < len(required):
            continue
        literals, shown = 0, [usage.syntax.split()[0]]
        for pattern, word in zip(required, words, strict=False):
            matched = _word_matches(pattern, word, environments)
            if matched is False:
                break
            literals += matched is True
            shown.append(word.lower() if matched or pattern == "<env>" else pattern)
        else:
            score = (literals, len(required))
            if best is None or score > best[0]:
                best = (score, usage, " ".join(shown))
    return None if best is None else (best[1], best[2])


# --- the roles, with the store's part -----------------------------------------------------------


class Policy:
    """Whether someone holds a role now: the config, and for responders the overrides in force
    (the store; bot/runbook/oncall)."""

    def __init__(self, config: Config, store: OnCallStore, *, clock: Clock = utc_now) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self._path = _escalation_path(config)

    def named(self, role: Role, user_id: str) -> bool:
        """What the config alone says (an override is not counted)."""
        if role == "responders":
            access = self.config.access
            return (
                user_id in self._path or access.may_deploy(user_id) or access.may_approve(user_id)
            )
        return may_run(role, self.config.access, user_id)

    async def holds(self, role: Role, user_id: str) -> bool:
        if self.named(role, user_id):
            return True
        if role != "responders":
            return False
        return user_id in await self._overridden(self.clock())

    async def _overridden(self, now: datetime) -> set[str]:
        """Who an override puts on call now; nobody if the store cannot say (logged)."""
        try:
            overrides = await read_for_ack(
                self.store.overrides, None, ending_after=now, starting_by=now
            )
        except StoreError as exc:
            log.warning("overrides not read for a responder check (%s): config roles only", exc)
            return set()
        return {o.user_id for o in overrides}


def _escalation_path(config: Config) -> frozenset[str]:
    people: set[str] = set()
    for level in config.escalation.levels:
        people.update(level.users)
        if level.rotation is not None:
            people.update(level.rotation.members)
    return frozenset(people)


# --- the table (README "Security model") -------------------------------------------------------


def policy_rows(
    commands: Iterable[tuple[str, Iterable[Usage]]], buttons: Iterable[tuple[str, str, Allow]]
) -> list[tuple[str, str, str]]:
    """(what, who may, checked besides) for every usage line and every button, as Markdown
    table cells (`|` escaped)."""
    rows = [
        (f"`{usage.syntax}`", who(usage.role), usage.then or "—")
        for _, usages in commands
        for usage in usages
        if not usage.syntax.endswith(" help")
    ]
    rows += [
        (f"{label} (`{action_id}`)", who(allow.role, allow.also), allow.then or "—")
        for action_id, label, allow in buttons
    ]
    return [tuple(cell.replace("|", "\\|") for cell in row) for row in rows]  # type: ignore[misc]
