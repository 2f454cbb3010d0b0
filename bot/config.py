"""The bot's config file (config/eventmesh.yml): typed, frozen models and a loader.

Operators edit this file by hand, so every problem is reported as one line naming the key
path ("environments.dev.hosts[0]: 'deploy@' is not user@host[:port]"), all problems of a
file at once, and unknown keys are errors: a misspelt key silently ignored is a setting
that never took effect.
"""

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NoReturn, Self
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
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


# --- the sections --------------------------------------------------------------------------

_HOST = re.compile(
    r"([A-Za-z_][A-Za-z0-9._-]*)@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::([0-9]{1,5}))?"
)


class Host(_Model):
    """An SSH target, written 'user@host' or 'user@host:port' in the file."""

    user: NonEmpty
    hostname: NonEmpty
    port: int = Field(22, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        match = _HOST.fullmatch(data)
        if match is None:
            raise ValueError(f"{data!r} is not user@host[:port]")
        if match[3] is not None and not 1 <= int(match[3]) <= 65535:
            raise ValueError(f"{data!r} is not user@host[:port] (port 1-65535)")
        user, hostname, port = match.groups()
        return {"user": user, "hostname": hostname, "port": int(port or 22)}

    def __str__(self) -> str:
        address = f"{self.user}@{self.hostname}"
        return address if self.port == 22 else f"{address}:{self.port}"


class Threshold(_Model):
    """One row of the runbook's Key Metrics table: the warning and critical levels."""

    warning: float
    critical: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warning >= self.critical:
            raise ValueError(
                f"warning ({self.warning:g}) must be below critical ({self.critical:g})"
            )
        return self


class Thresholds(_Model):
    """Defaults are the runbook's Key Metrics table."""

    health_response_ms: Threshold = Threshold(warning=500, critical=2000)
    api_response_ms: Threshold = Threshold(warning=200, critical=1000)
    memory_percent: Threshold = Threshold(warning=70, critical=85)
    cpu_percent: Threshold = Threshold(warning=60, critical=80)
    error_rate_percent: Threshold = Threshold(warning=1, critical=5)
    build_minutes: Threshold = Threshold(warning=30, critical=40)


class DeploySettings(_Model):
    """How to build, install and restart; `workdir` is where build, test and version run.

    In the top-level `deploy` section '{env}' is left as written; each environment's copy
    has it replaced by the environment's name in workdir, install_dir and backup_dir.
    """

    workdir: Path = Path(".")
    # Where the package comes from: `build` — built, tested and packaged on the bot's machine
    # in a workspace of its own; `ci` — the artifact `ci_artifact` of the CI run of the commit
    # deployed (GitHub Actions artifacts API; it holds eventmesh-<version>.tar.gz), so nothing
    # is built here. `ci` needs the `ci` section.
    source: Literal["build", "ci"] = "build"
    ci_artifact: NonEmpty = "eventmesh-package"
    build: NonEmpty = "cargo build --release"
    test: NonEmpty = "cargo test --release"
    artifacts: list[NonEmpty] = Field(
        default_factory=lambda: ["target/release/riptide-*"], min_length=1
    )
    version: NonEmpty = "git describe --tags --always"
    install_dir: NonEmpty = "/opt/eventmesh/{env}"
    backup_dir: NonEmpty = "/opt/eventmesh/backups"
    keep_backups: int = Field(10, ge=1)
    stop: NonEmpty = "sudo -n systemctl stop eventmesh-api"
    start: NonEmpty = "sudo -n systemctl start eventmesh-api"
    restart: NonEmpty = "sudo -n systemctl restart eventmesh-api"
    verify_timeout: Duration = timedelta(seconds=60)
    auto_rollback: bool = True
    keep_releases: int = Field(5, ge=2)
    # The runbook's staging smoke tests; run in workdir after verification, a failure fails
    # the deploy (and rolls it back).
    smoke: NonEmpty | None = None
    # How often verify polls /healthz while it waits for 3 passes in a row.
    verify_interval: Duration = timedelta(seconds=5)
    # A production request nobody decides within this is closed as expired.
    approval_timeout: Duration = timedelta(minutes=30)
    # The runbook's "monitor closely" after a deploy: 5 minutes for an environment that
    # requires approval (production), 2 for the others, unless set here.
    watch_for: Duration | None = None
    # A lock taken by hand with /deploy lock: its holder is reminded by DM this often.
    lock_reminder: Duration = timedelta(hours=1)
    # The Rollback Checklist's "monitor for 10-15 minutes": after a rollback, a health check
    # this often for this long, each posted in the rollback's thread.
    followup_every: Duration = timedelta(minutes=1)
    followup_for: Duration = timedelta(minutes=15)
    # What /health <env> diagnose and logs look at on each host: the service's processes (the
    # runbook's `ps aux | grep riptide`: command lines containing this text) and its log.
    process: ProcessName = "riptide"
    log_file: LogPath = "/var/log/eventmesh/api.log"
    # Variables for the commands run on the bot's machine (build, test, version, smoke, and a
    # `transport: local` environment's commands). They get only these, PATH, HOME, LANG/LC_*
    # and the deploy's EVENTMESH_* — never the bot's own secrets (bot/transport/local.py).
    env: dict[EnvVarName, ChildValue] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _not_the_bots_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.upper().startswith(_BOT_SECRET_PREFIXES):
                raise ValueError(
                    f"{name}: the bot's own secrets (SLACK_*, EVENTMESH_DATABASE_URL) are never "
                    "passed to the commands it runs"
                )
        return value

    def watch_duration(self, requires_approval: bool) -> timedelta:
        if self.watch_for is not None:
            return self.watch_for
        return timedelta(minutes=5) if requires_approval else timedelta(minutes=2)


_BOT_SECRET_PREFIXES = ("SLACK_", "EVENTMESH_DATABASE_URL")
_ENV_PATH_KEYS = ("workdir", "install_dir", "backup_dir", "log_file")
# An environment's own keys; any key of DeploySettings may be written beside them.
_ENVIRONMENT_KEYS = (
    "base_url",
    "transport",
    "hosts",
    "requires_approval",
    "check_interval",
    "page_on_critical",
    "severity",
)
# The paging policy of an environment that says nothing itself (nor alerts.page_on_critical):
# (page_on_critical, severity) by its name. A production outage wakes people; staging's is
# worth an incident without a page; dev's is worth neither. Any other name pages at SEV 1.
PAGING_BY_NAME = {"production": (True, 1), "staging": (False, 3), "dev": (False, 3)}
DEFAULT_PAGING = (True, 1)


class _EnvironmentEntry(NamedTuple):
    """One mapping under `environments:` as written, with the deploy section it inherits."""

    name: str
    written: dict[Any, Any]
    inherited: DeploySettings

    def fields(self) -> dict[str, Any]:
        """The Environment fields: own keys, plus the inherited deploy section overridden."""
        deploy = self.inherited.model_dump()
        deploy.update((k, v) for k, v in self.written.items() if k in DeploySettings.model_fields)
        for key in _ENV_PATH_KEYS:
            if isinstance(deploy[key], str | Path):
                deploy[key] = str(deploy[key]).replace("{env}", self.name)
        own = {k: v for k, v in self.written.items() if k in _ENVIRONMENT_KEYS}
        return {**own, "name": self.name, "deploy": deploy}


class Environment(_Model):
    """A deploy target. `hosts` implies transport ssh; `transport: local` runs here.

    From the file, `deploy` is the top-level section with this environment's overrides and
    '{env}' filled in; an Environment built in code takes `deploy` as given.
    """

    name: str
    base_url: BaseUrl
    transport: Literal["local", "ssh"]
    hosts: list[Host] = Field(default_factory=list)
    requires_approval: bool = False
    check_interval: Duration = timedelta(seconds=30)
    # A Critical alert of this environment opens an incident (and pages) at this severity;
    # unset: Config.paging's defaults.
    page_on_critical: bool | None = None
    severity: int | None = Field(None, ge=1, le=3)
    deploy: DeploySettings = Field(default_factory=DeploySettings)

    @model_validator(mode="wrap")
    @classmethod
    def _check_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Read an environment as written in the file, or from keyword fields in code."""
        if isinstance(data, _EnvironmentEntry):
            accepted = (*_ENVIRONMENT_KEYS, *DeploySettings.model_fields)
            errors, fields = _unknown_keys(data.written, accepted), data.fields()
        elif isinstance(data, dict):
            errors = _unknown_keys(data, tuple(cls.model_fields))
            fields = {k: v for k, v in data.items() if k in cls.model_fields}
        else:
            return handler(data)
        if "hosts" in fields:
            fields.setdefault("transport", "ssh")
        return _validate_reporting_all(handler, cls.__name__, fields, errors, move=_written_key)

    @model_validator(mode="after")
    def _hosts_match_transport(self) -> Self:
        if self.transport == "local" and self.hosts:
            problem = "transport: local runs on this machine and takes no hosts"
        elif self.transport == "ssh" and not self.hosts:
            problem = "transport: ssh needs at least one user@host[:port]"
        else:
            return self
        _raise(type(self).__name__, [_error(("hosts",), self.hosts, problem)])

    @property
    def healthz_url(self) -> str:
        return f"{self.base_url}/healthz"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    @property
    def status_url(self) -> str:
        return f"{self.api_url}/status"

    @property
    def metrics_url(self) -> str:
        return f"{self.base_url}/metrics"


def _written_key(loc: Loc) -> Loc:
    """An override was written beside the environment's keys, not under a 'deploy' key."""
    return loc[1:] if len(loc) > 1 and loc[0] == "deploy" else loc


class SlackChannels(_Model):
    """The channels the bot posts in, and how long Slack may be out of reach before GET
    /readyz says the bot is not ready (bot/slack/readiness.py)."""

    alerts_channel: ChannelId | None = None
    approvals_channel: ChannelId | None = None
    incidents_channel: ChannelId | None = None
    ready_grace: Duration = timedelta(minutes=5)

    def written_channels(self) -> dict[str, str]:
        """Each `*_channel` key that is set, with its value."""
        return {
            key: value
            for key, value in self.model_dump().items()
            if key.endswith("_channel") and value
        }


class Access(_Model):
    """Who may run /deploy and /rollback, and who may approve; /health is open to all."""

    deployers: list[UserId] = Field(default_factory=list)
    approvers: list[UserId] = Field(default_factory=list)

    def may_deploy(self, user_id: str) -> bool:
        return user_id in self.deployers

    def may_approve(self, user_id: str) -> bool:
        return user_id in self.approvers


class SshSettings(_Model):
    key_file: ExpandedPath = Field(Path("~/.ssh/id_ed25519"), validate_default=True)
    known_hosts: ExpandedPath = Field(Path("~/.ssh/known_hosts"), validate_default=True)
    connect_timeout: Duration = timedelta(seconds=10)
    command_timeout: Duration = timedelta(minutes=15)


class AlertSettings(_Model):
    """How the scheduled checks turn readings into alerts (README "Alerts").

    An alert fires after `breaches_to_fire` breaching checks in a row and resolves after
    `passes_to_resolve` passing ones; it leaves a level only once the value is
    `hysteresis_percent` of that level's threshold below it; `flapping_changes` changes of
    level within `flapping_window` mark it flapping (quiet until the window passes without
    one). `silence_for` is how long the Silence button silences; presses extend a silence up
    to `silence_max` from its start, never further. `scheduled_checks: false`
    runs no scheduled checks in this bot: a second replica on the same database, say, whose
    readings would count twice.
    """

    breaches_to_fire: int = Field(2, ge=1)
    passes_to_resolve: int = Field(2, ge=1)
    repeat_every: Duration = timedelta(hours=1)
    page_on_critical: bool = True
    hysteresis_percent: float = Field(5.0, ge=0, lt=100)
    flapping_changes: int = Field(4, ge=2)
    flapping_window: Duration = timedelta(minutes=15)
    silence_for: Duration = timedelta(hours=1)
    silence_max: Duration = timedelta(hours=4)
    scheduled_checks: bool = True


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


class MetricsSettings(_Model):
    """`dir`: the CI's build metrics (/health report). The rest: where a service's /metrics
    counts the requests it answered, for the error rate (bot/runbook/alerts/error_rate.py).

    `requests_counter` unset: found by itself among the usual names; `status_label` unset:
    the convention's, else the first of code, status, status_code, http_response_status_code.
    `exclude_paths` are left out besides the check's own (healthz, status, metrics).
    """

    dir: Path = Path("metrics")
    requests_counter: MetricName | None = None
    status_label: LabelName | None = None
    exclude_paths: list[UrlPath] = Field(default_factory=list)


class DiagnoseSettings(_Model):
    """/health <env> diagnose: how many of the log's last lines it reads for errors."""

    log_lines: int = Field(2000, ge=1, le=10_000)


class Rate(_Model):
    """At most `count` in any `per` (a sliding window)."""

    count: int = Field(ge=1)
    per: Duration


class LimitSettings(_Model):
    """Abuse bounded (README "Security model"): per user, per environment, per watch."""

    # Each slash command, per user (help and bad input count; refusals for the limit do not).
    commands: Rate = Rate(count=10, per=timedelta(minutes=1))
    # Incidents a user opens with /escalate (each pages the escalation path).
    escalations: Rate = Rate(count=3, per=timedelta(minutes=10))
    # Commands that log into an environment's hosts (/rollback list, /health <env> resources,
    # diagnose and logs) running at once for one environment; the next is told to wait.
    ssh_per_environment: int = Field(1, ge=1, le=20)
    # Of the bot's 50 watches (/health <env> watch, resources with a duration), per user.
    watches_per_user: int = Field(10, ge=1, le=50)


class RetentionSettings(_Model):
    """How long rows are kept (the runbook's log retention, 90 days); pruned every hour."""

    timers: Duration = timedelta(days=90)  # timers that fired
    audit: Duration = timedelta(days=90)  # the audit log
    events: Duration = timedelta(days=90)  # incident timelines and alert thread lines (done)


class CiSettings(_Model):
    """Deploys are gated on the latest run of `workflow` in `repository`."""

    provider: Literal["github"]
    repository: Repository
    workflow: NonEmpty
    api_url: BaseUrl = "https://api.github.com"
    token_env: EnvVarName = "GITHUB_TOKEN"


class Paging(NamedTuple):
    """What a Critical alert of an environment does: open an incident that pages, at which
    severity (1-3)."""

    page: bool
    severity: int

    def __str__(self) -> str:
        if self.page:
            return f"opens a SEV {self.severity} incident and pages"
        return f"does not page (SEV {self.severity} if someone escalates it)"


class Config(_Model):
    """The whole file. Only `environments` is required; every other section has defaults."""

    slack: SlackChannels = Field(default_factory=SlackChannels)
    access: Access = Field(default_factory=Access)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    ssh: SshSettings = Field(default_factory=SshSettings)
    environments: dict[EnvironmentName, Environment] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    escalation: Escalation = Field(default_factory=Escalation)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    diagnose: DiagnoseSettings = Field(default_factory=DiagnoseSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    ci: CiSettings | None = None

    @field_validator("environments", mode="before")
    @classmethod
    def _inherit_deploy(cls, value: Any, info: ValidationInfo) -> Any:
        """Each written environment inherits the deploy section (its defaults if it is broken)."""
        if not isinstance(value, dict):
            return value
        inherited = info.data.get("deploy", DeploySettings())
        return {
            name: _EnvironmentEntry(str(name), entry, inherited)
            if isinstance(entry, dict)
            else entry
            for name, entry in value.items()
        }

    @model_validator(mode="after")
    def _ci_source_needs_ci(self) -> Self:
        if self.ci is not None:
            return self
        for name, env in self.environments.items():
            if env.deploy.source == "ci":
                problem = "source: ci takes the package from CI: add the `ci` section"
                _raise(
                    type(self).__name__, [_error(("environments", name, "source"), "ci", problem)]
                )
        return self

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(self.environments)
            raise KeyError(f"unknown environment {name!r} (known: {known})") from None

    def channels(self) -> dict[str, list[str]]:
        """Each channel (id or #name) in the config, with the keys that name it."""
        channels: dict[str, list[str]] = {}
        for key, channel in self.slack.written_channels().items():
            channels.setdefault(channel, []).append(f"slack.{key}")
        return channels

    def users(self) -> dict[str, list[str]]:
        """Each user (id, @handle or email) in the config, with the keys that name them."""
        users: dict[str, list[str]] = {}
        for role in ("deployers", "approvers"):
            for i, user in enumerate(getattr(self.access, role)):
                users.setdefault(user, []).append(f"access.{role}[{i}]")
        for i, level in enumerate(self.escalation.levels):
            for j, user in enumerate(level.users):
                users.setdefault(user, []).append(f"escalation.levels[{i}].users[{j}]")
            members = level.rotation.members if level.rotation else []
            for j, user in enumerate(members):
                users.setdefault(user, []).append(f"escalation.levels[{i}].rotation.members[{j}]")
        return users

    def names(self) -> dict[str, list[str]]:
        """The channels and users written as names, not ids, with the keys that name them."""
        named = {**self.channels(), **self.users()}
        return {name: keys for name, keys in named.items() if not is_slack_id(name)}

    def with_ids(self, ids: dict[str, str]) -> "Config":
        """A copy with each name in `ids` replaced by its Slack id (the rest as written)."""

        def one(value: str) -> str:
            return ids.get(value, value)

        def each(values: list[str]) -> list[str]:
            return list(dict.fromkeys(one(v) for v in values))  # two names of one person: once

        slack = self.slack.model_copy(
            update={k: one(v) for k, v in self.slack.written_channels().items()}
        )
        access = self.access.model_copy(
            update={
                "deployers": each(self.access.deployers),
                "approvers": each(self.access.approvers),
            }
        )
        levels = []
        for level in self.escalation.levels:
            rotation = level.rotation
            if rotation is not None:
                # Not de-duplicated: a member written twice takes two turns, as written.
                rotation = rotation.model_copy(
                    update={"members": [one(m) for m in rotation.members]}
                )
            levels.append(
                level.model_copy(update={"users": each(level.users), "rotation": rotation})
            )
        escalation = self.escalation.model_copy(update={"levels": levels})
        return self.model_copy(update={"slack": slack, "access": access, "escalation": escalation})

    def paging(self, env_name: str) -> Paging:
        """Whether a Critical alert of env_name pages, and the incident's severity: the
        environment's own keys, else alerts.page_on_critical where the file gives it, else
        PAGING_BY_NAME (production pages at SEV 1, staging SEV 3 unpaged, dev never)."""
        by_name_page, by_name_severity = PAGING_BY_NAME.get(env_name, DEFAULT_PAGING)
        env = self.environments.get(env_name)
        page = env.page_on_critical if env is not None else None
        if page is None:
            given = "page_on_critical" in self.alerts.model_fields_set
            page = self.alerts.page_on_critical if given else by_name_page
        severity = env.severity if env is not None else None
        return Paging(page, severity or by_name_severity)

    def with_base_url(self, env_name: str, url: str) -> "Config":
        """A copy with one environment's base_url replaced (the console points 'local' at the
        demo service it started). Raises KeyError for an unknown name, ValueError for a bad url.
        """
        moved = self.environment(env_name).model_copy(update={"base_url": _base_url(url)})
        return self.model_copy(update={"environments": {**self.environments, env_name: moved}})


# --- loading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would resolve by keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found") from None
    except IsADirectoryError:
        raise ConfigError("", "is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError("", "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read the file: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError("", f"YAML error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"YAML error: {_one_line(str(exc))}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Any problem raises ConfigError (see its `errors`)."""
    data = _read_yaml(Path(path))
    if data is None:
        raise ConfigError("", "the file is empty (it needs at least an environments section)")
    if not isinstance(data, dict):
        sections = ", ".join(Config.model_fields)
        raise ConfigError("", f"the top level must be a mapping of sections ({sections})")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = list(dict.fromkeys((_key_path(e["loc"]), _describe(e)) for e in exc.errors()))
        (key, problem), *rest = problems
        raise ConfigError(key, problem, tuple(ConfigError(k, p) for k, p in rest)) from None


def check_config(path: str | Path) -> tuple[bool, list[str]]:
    """(ok, lines to print) for `eventmesh-bot check-config`: one line per problem."""
    try:
        config = load_config(path)
    except ConfigError as err:
        return False, [f"{path}: {problem}" for problem in err.errors]
    count = len(config.environments)
    names = ", ".join(config.environments)
    plural = "" if count == 1 else "s"
    policy = [f"  {name}: a Critical alert {config.paging(name)}" for name in config.environments]
    return True, [f"{path}: OK ({count} environment{plural}: {names})", *policy]


# --- turning pydantic's errors into lines --------------------------------------------------


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
