"""The config's field types and the checks every model shares: durations, Slack ids and
names, environment names, paths and URLs; ConfigError and how a problem names its key."""

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails


class ConfigError(Exception):
    """One problem in a config file: str(err) is the single line '<key.path>: <problem>'.

    `key` is '' when the problem is the file itself (missing, not YAML, empty). `errors`
    holds every problem found in the file, this one first, so a caller can show them all.
    """

    def __init__(self, key: str, problem: str, more: tuple["ConfigError", ...] = ()) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
        self.errors: tuple[ConfigError, ...] = (self, *more)


# --- durations -----------------------------------------------------------------------------

_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_DURATION_HINT = "is not a duration (use 30s, 15m, 1h)"


def parse_duration(text: str) -> timedelta:
    """'30s', '15m', '1h', '2d' or a compound such as '1h30m' (largest unit first).

    Bare numbers are refused: whether `30` means seconds or minutes is exactly the kind of
    guess that makes a check run 60 times too often.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) and text else None
    if match is None:
        raise ValueError(f"{text!r} {_DURATION_HINT}")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    try:
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


def _duration(value: object) -> timedelta:
    """Config durations are text and longer than zero (a zero interval or timeout is a typo)."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        result = parse_duration(value)
    else:
        raise ValueError(f"{_show(value)} {_DURATION_HINT}")
    if result <= timedelta(0):
        raise ValueError(f"{_show(value)} must be longer than zero")
    return result


Duration = Annotated[timedelta, BeforeValidator(_duration)]


# --- checked strings -----------------------------------------------------------------------


def _matching(regex: str, what: str) -> AfterValidator:
    """A validator accepting only whole matches of `regex`; `what` names the expected form."""
    pattern = re.compile(regex)

    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


# A person or channel by id, or by the name people know (resolved to the id at start, through
# Slack, by bot/slack/setup/names.py): '@handle' or an email for a user, '#name' for a channel.
USER_ID = re.compile(r"[UW][A-Z0-9]+")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
_USER_NAME = r"@[A-Za-z0-9][A-Za-z0-9._-]{0,79}|[^@\s]+@[^@\s]+\.[^@\s]+"
_CHANNEL_NAME = r"#[a-z0-9][a-z0-9_-]{0,79}"
UserId = Annotated[
    str,
    _matching(
        rf"{USER_ID.pattern}|{_USER_NAME}",
        "a Slack user id like U012AB3CD, an @handle or an email",
    ),
]
ChannelId = Annotated[
    str,
    _matching(
        rf"{CHANNEL_ID.pattern}|{_CHANNEL_NAME}",
        "a Slack channel id like C012AB3CD or a #channel-name",
    ),
]


def is_slack_id(value: str) -> bool:
    """An id as Slack writes it (a name to resolve otherwise: '#ops', '@alice', an email)."""
    return USER_ID.fullmatch(value) is not None or CHANNEL_ID.fullmatch(value) is not None


Repository = Annotated[str, _matching(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", "owner/name")]
EnvVarName = Annotated[str, _matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")]
MetricName = Annotated[
    str, _matching(r"[a-zA-Z_:][a-zA-Z0-9_:]*", "a Prometheus metric name like http_requests_total")
]
LabelName = Annotated[str, _matching(r"[a-zA-Z_][a-zA-Z0-9_]*", "a Prometheus label name")]
UrlPath = Annotated[str, _matching(r"/[^\s]*", "a path starting with /")]
NonEmpty = Annotated[str, Field(min_length=1)]
# An environment variable's value for a child process: no NUL (execve cannot pass one).
ChildValue = Annotated[str, _matching(r"[^\x00]*", "a value without NUL characters")]
ExpandedPath = Annotated[Path, AfterValidator(Path.expanduser)]

_URL = re.compile(
    r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::([0-9]{1,5}))?(/[^\s?#]*)?"
)


def _base_url(value: str) -> str:
    """http(s)://host[:port][/path], without a trailing slash: base_url + "/healthz" must work."""
    match = _URL.fullmatch(value)
    if match is None or (match[1] is not None and not 1 <= int(match[1]) <= 65535):
        raise ValueError(f"{value!r} is not http(s)://host[:port][/path]")
    return value.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_base_url)]
# Sent to the hosts quoted, never as syntax; control characters would only hide mistakes.
ProcessName = Annotated[
    str, _matching(r"[^\x00-\x1f\x7f]{1,200}", "a process name (1-200 printable characters)")
]
LogPath = Annotated[
    str,
    _matching(
        r"[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f/]", "a file path (no trailing /, no control characters)"
    ),
]

# Words that follow the command name in /deploy, /health and /rollback: an environment
# called 'status' could never be addressed.
RESERVED_NAMES = frozenset({"all", "status", "history", "help", "list", "report", "backup"})
_ENV_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _environment_name(value: str) -> str:
    """Names appear in slash commands and in paths, so they stay short and plain."""
    if _ENV_NAME.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not an environment name (a lowercase letter, then up to 31 of "
            "a-z 0-9 _ -)"
        )
    if value in RESERVED_NAMES:
        raise ValueError(f"{value!r} is reserved (it is a subcommand word)")
    return value


EnvironmentName = Annotated[str, AfterValidator(_environment_name)]

# --- error plumbing ------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _error(loc: Loc, value: object, message: str) -> InitErrorDetails:
    """A problem found by hand, in the same form as pydantic's own."""
    return {
        "type": "value_error",
        "loc": loc,
        "input": value,
        "ctx": {"error": ValueError(message)},
    }


def _as_init(error: ErrorDetails, loc: Loc) -> InitErrorDetails:
    """Turn a reported error back into one that can be raised again, at `loc`."""
    init: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error["input"]}
    if "ctx" in error:
        init["ctx"] = error["ctx"]
    return init


def _raise(title: str, errors: list[InitErrorDetails]) -> NoReturn:
    """Raised inside a validator, a ValidationError keeps each error's own key path."""
    raise ValidationError.from_exception_data(title, errors)


def _unknown_keys(data: dict[Any, Any], accepted: tuple[str, ...]) -> list[InitErrorDetails]:
    expected = f"unknown key (expected one of: {', '.join(accepted)})"
    return [
        _error((str(key),), value, expected) for key, value in data.items() if key not in accepted
    ]


def _validate_reporting_all(
    handler: Callable[[Any], Any],
    title: str,
    fields: Any,
    errors: list[InitErrorDetails],
    move: Callable[[Loc], Loc] = lambda loc: loc,
) -> Any:
    """Validate `fields`, raising pydantic's errors together with those found beforehand."""
    try:
        result = handler(fields)
    except ValidationError as exc:
        errors = errors + [_as_init(e, move(e["loc"])) for e in exc.errors()]
    if errors:
        _raise(title, errors)
    return result


class _Model(BaseModel):
    """Frozen, and unknown keys are errors that list the keys the mapping accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _check_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not isinstance(data, dict):
            return handler(data)
        accepted = tuple(cls.model_fields)
        known = {key: value for key, value in data.items() if key in accepted}
        return _validate_reporting_all(handler, cls.__name__, known, _unknown_keys(data, accepted))


def _key_path(loc: Loc) -> str:
    """('environments', 'dev', 'hosts', 0) -> 'environments.dev.hosts[0]'."""
    path = ""
    for i, part in enumerate(loc):
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key is the path
            continue
        if type(part) is int and loc[i + 1 : i + 2] != ("[key]",):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a path",
}
_MISSING_KEY = "required key is missing"
_MISSING_HINTS = {"transport": "give transport: local, or hosts: [user@host[:port], ...]"}


def _describe(error: ErrorDetails) -> str:
    """One line, in the file's terms, for one pydantic error."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        hint = _MISSING_HINTS.get(str(error["loc"][-1]))
        return f"{_MISSING_KEY} ({hint})" if hint else _MISSING_KEY
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}"
    if kind == "literal_error":
        return f"{_show(value)} must be {ctx['expected']}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {_show(value)})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (got {_show(value)})"
    if kind == "less_than":
        return f"must be less than {ctx['lt']:g} (got {_show(value)})"
    if kind == "too_short":
        return "must not be empty"
    if kind == "extra_forbidden":
        return "unknown key"
    return _one_line(error["msg"])


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
