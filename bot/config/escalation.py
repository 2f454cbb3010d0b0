"""The config's escalation path: levels, their people and rotations (turns, hand-off times)."""

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    model_validator,
)

from bot.config.fields import (
    _MISSING_KEY,
    Duration,
    NonEmpty,
    UserId,
    _error,
    _Model,
    _raise,
    _show,
    parse_duration,
)

# --- rotations (README "Rotations and overrides"; the arithmetic: bot/runbook/oncall) ---------

_EVERY = re.compile(r"(?:([0-9]+)w)?(.*)")
_EVERY_HINT = "(use 1d, 1w, 2w)"


def _rotation_every(value: object) -> timedelta:
    """The config's durations plus weeks ('1w', '2w', '1w3d'), a whole number of days."""
    match = _EVERY.fullmatch(value) if isinstance(value, str) and value else None
    try:
        if match is None:
            raise ValueError
        weeks, rest = match.groups()
        span = timedelta(weeks=int(weeks or 0)) + (parse_duration(rest) if rest else timedelta(0))
    except (ValueError, OverflowError):
        raise ValueError(f"{_show(value)} is not a duration {_EVERY_HINT}") from None
    if span <= timedelta(0):
        raise ValueError(f"{_show(value)} must be longer than zero")
    if span % timedelta(days=1):
        raise ValueError(f"{_show(value)} is not a whole number of days {_EVERY_HINT}")
    return span


def _handoff_time(value: object) -> datetime:
    """An ISO 8601 time, as text or as YAML's own timestamp; its offset may be left out."""
    if isinstance(value, datetime):
        return value
    hint = "is not an ISO 8601 date and time like 2026-12-07T09:00:00+01:00"
    if isinstance(value, date):
        raise ValueError(f"{value.isoformat()!r} {hint} (it needs the time of day)")
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} {hint}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{_show(value)} {hint}") from None


def _zone_name(value: str) -> str:
    """An IANA time zone name that zoneinfo knows (the system's database or tzdata's)."""
    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):
        raise ValueError(
            f"{value!r} is not a time zone (an IANA name such as Europe/Berlin or UTC)"
        ) from None
    return value


class RotationSettings(_Model):
    """Members taking turns at a level, changing at `handoff` and every `every` after it."""

    members: list[UserId] = Field(min_length=1)
    every: Annotated[timedelta, BeforeValidator(_rotation_every)]
    handoff: Annotated[datetime, BeforeValidator(_handoff_time)]
    handoff_zone: Annotated[str, AfterValidator(_zone_name)] | None = None

    @model_validator(mode="after")
    def _handoff_in_its_zone(self) -> Self:
        written = self.handoff
        if self.handoff_zone is None:
            if written.tzinfo is None:
                problem = (
                    f"{written.isoformat()!r} has no UTC offset: add one (+01:00), "
                    "or name the zone in handoff_zone"
                )
                _raise(type(self).__name__, [_error(("handoff",), written, problem)])
            return self
        if written.tzinfo is None:
            return self
        zone = ZoneInfo(self.handoff_zone)
        local = written.astimezone(zone)
        if local.replace(tzinfo=None) != written.replace(tzinfo=None):
            offset = local.isoformat(timespec="seconds")[-6:]
            problem = (
                f"{written.isoformat()!r} is {local:%H:%M} in {self.handoff_zone}, whose "
                f"offset then is {offset}: write that offset, or leave it out"
            )
            _raise(type(self).__name__, [_error(("handoff",), written, problem)])
        return self

    @property
    def handoff_time(self) -> datetime:
        """The hand-off as an aware time: a time written without offset is in handoff_zone."""
        if self.handoff.tzinfo is not None:
            return self.handoff
        assert self.handoff_zone is not None
        return self.handoff.replace(tzinfo=ZoneInfo(self.handoff_zone))


class EscalationLevel(_Model):
    """Who a level pages: fixed `users`, a `rotation`'s member on call, or both."""

    name: NonEmpty
    users: list[UserId] = Field(default_factory=list)
    rotation: RotationSettings | None = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _someone_to_page(self) -> Self:
        if self.users or self.rotation is not None:
            return self
        hint = "(give users, a rotation, or both)"
        problem = (
            f"must not be empty {hint}"
            if "users" in self.model_fields_set
            else f"{_MISSING_KEY} {hint}"
        )
        _raise(type(self).__name__, [_error(("users",), self.users, problem)])


class Escalation(_Model):
    """The runbook's escalation path; each level waits `timeout` before the next is paged.

    An acknowledged incident is not forgotten: `ack_reminder` after the acknowledgement the
    acknowledger is asked whether it is resolved, and with no answer within `reopen_after`
    the incident is paged again from the level where it was acknowledged.
    """

    levels: list[EscalationLevel] = Field(default_factory=list)
    ack_reminder: Duration = timedelta(minutes=30)
    reopen_after: Duration = timedelta(minutes=15)

    @model_validator(mode="after")
    def _timeouts(self) -> Self:
        errors = [
            _error(
                ("levels", i, "timeout"),
                None,
                f"{_MISSING_KEY} (every level but the last needs one)",
            )
            for i, level in enumerate(self.levels[:-1])
            if level.timeout is None
        ]
        # /oncall and the overrides name a level; two of one name could not be told apart.
        first: dict[str, int] = {}
        for i, level in enumerate(self.levels):
            seen = first.setdefault(level.name.casefold(), i)
            if seen != i:
                errors.append(
                    _error(
                        ("levels", i, "name"),
                        level.name,
                        f"{level.name!r} is the name of level {seen + 1} already",
                    )
                )
        if errors:
            _raise(type(self).__name__, errors)
        return self
