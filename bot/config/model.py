"""The config's top-level model (Config) and its smaller sections: Slack channels, access,
SSH, alerts, metrics, limits, retention, CI."""

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.config.environments import (
    DEFAULT_PAGING,
    PAGING_BY_NAME,
    DeploySettings,
    Environment,
    Thresholds,
    _EnvironmentEntry,
)
from bot.config.escalation import Escalation
from bot.config.fields import (
    BaseUrl,
    ChannelId,
    Duration,
    EnvironmentName,
    EnvVarName,
    ExpandedPath,
    LabelName,
    MetricName,
    NonEmpty,
    Repository,
    UrlPath,
    UserId,
    _base_url,
    _error,
    _Model,
    _raise,
    is_slack_id,
)


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
