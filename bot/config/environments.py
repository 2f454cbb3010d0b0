"""An environment of the config: its hosts, thresholds, deploy settings and paging policy."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from bot.config.fields import (
    BaseUrl,
    ChildValue,
    Duration,
    EnvVarName,
    Loc,
    LogPath,
    NonEmpty,
    ProcessName,
    _error,
    _Model,
    _raise,
    _unknown_keys,
    _validate_reporting_all,
)

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
