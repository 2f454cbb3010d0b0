"""The config model and loader: the example loads as is, and every broken file gets one line."""

import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import (
    Config,
    ConfigError,
    Environment,
    Host,
    Thresholds,
    check_config,
    load_config,
    parse_duration,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tests" / "fixtures" / "eventmesh.example.yml"
DEFAULT = REPO / "config" / "eventmesh.yml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
DEV_LINE = EXAMPLE_TEXT.splitlines().index("  dev:") + 1
STAGING_LINE = EXAMPLE_TEXT.splitlines().index("  staging:") + 1
MINIMAL = "environments:\n  local: {base_url: 'http://localhost:8080', transport: local}\n"


def edited(old: str, new: str) -> str:
    """The example with one edit; failing loudly if the example no longer has `old`."""
    assert old in EXAMPLE_TEXT, old
    return EXAMPLE_TEXT.replace(old, new, 1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventmesh.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the files that ship -------------------------------------------------------------------


def test_example_loads_with_its_values() -> None:
    config = load_config(EXAMPLE)

    assert list(config.environments) == ["local", "dev", "staging", "production"]
    local, staging, production = (config.environment(n) for n in ("local", "staging", "production"))
    assert local.transport == "local"
    assert local.hosts == []
    assert local.deploy.install_dir == "./data/local/eventmesh"
    assert local.deploy.backup_dir == "./data/local/backups"
    assert staging.deploy.install_dir == "/opt/eventmesh/staging"
    assert staging.deploy.backup_dir == "/opt/eventmesh/backups"
    assert config.deploy.install_dir == "/opt/eventmesh/{env}"
    assert staging.transport == "ssh"
    assert [str(h) for h in production.hosts] == [
        "deploy@prod-1.eventmesh.internal",
        "deploy@prod-2.eventmesh.internal:2222",
    ]
    assert production.hosts[1] == Host(
        user="deploy", hostname="prod-2.eventmesh.internal", port=2222
    )
    assert production.hosts[0].port == 22
    assert production.requires_approval
    assert not staging.requires_approval
    assert production.check_interval == timedelta(seconds=15)
    assert production.status_url == "https://api.eventmesh.com/api/v1/status"
    assert production.healthz_url == "https://api.eventmesh.com/healthz"
    assert production.metrics_url == "https://api.eventmesh.com/metrics"
    assert production.api_url == "https://api.eventmesh.com/api/v1"
    assert production.deploy.verify_timeout == timedelta(seconds=60)
    assert production.deploy.artifacts == ["target/release/riptide-*"]

    assert config.slack.approvals_channel == "C0APPROVALS"
    assert config.access.may_deploy("U0DEPLOY2")
    assert not config.access.may_deploy("U0APPROVER1")
    assert config.access.may_approve("U0APPROVER1")
    assert config.ssh.connect_timeout == timedelta(seconds=10)
    assert config.ssh.command_timeout == timedelta(minutes=15)
    assert config.ssh.key_file == Path("~/.ssh/id_ed25519").expanduser()
    assert config.thresholds.cpu_percent.warning == 60
    assert config.thresholds.cpu_percent.critical == 80
    assert config.thresholds.health_response_ms.critical == 2000
    assert config.alerts.repeat_every == timedelta(hours=1)
    # Not in the example: the defaults.
    assert config.alerts.hysteresis_percent == 5
    assert config.alerts.flapping_changes == 4
    assert config.alerts.flapping_window == timedelta(minutes=15)
    assert config.alerts.silence_for == timedelta(hours=1)
    assert config.alerts.scheduled_checks is True

    levels = config.escalation.levels
    assert [level.name for level in levels] == [
        "On-call DevOps Engineer",
        "DevOps Team Lead",
        "Engineering Manager",
        "CTO",
    ]
    assert [level.timeout for level in levels] == [
        timedelta(minutes=10),
        timedelta(minutes=15),
        timedelta(minutes=30),
        None,
    ]
    # Not in the example: the defaults, an acknowledged incident's reminder and re-open.
    assert config.escalation.ack_reminder == timedelta(minutes=30)
    assert config.escalation.reopen_after == timedelta(minutes=15)
    assert config.metrics.dir == Path("metrics")
    assert config.ci is not None
    assert config.ci.repository == "eventmesh/eventmesh"


def test_the_diagnosis_keys_and_their_defaults(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    local, staging = config.environment("local"), config.environment("staging")
    assert (staging.deploy.process, staging.deploy.log_file) == (
        "riptide",
        "/var/log/eventmesh/api.log",
    )
    assert (local.deploy.process, local.deploy.log_file) == (
        "demo-service",
        "./data/local/log/api.log",
    )
    assert config.diagnose.log_lines == 2000
    # The example as it was before these keys (the shared copy): their defaults, and {env}.
    lines = EXAMPLE_TEXT.split("\n")
    before = "\n".join(
        line
        for line in lines
        if not line.lstrip().startswith(("process:", "log_file:", "diagnose:", "log_lines:"))
    )
    before = before.replace(
        "  auto_rollback: true\n", "  auto_rollback: true\n  log_file: /var/log/{env}.log\n"
    )
    older = load_config(write(tmp_path, before))
    assert older.environment("local").deploy.process == "riptide"
    assert older.environment("staging").deploy.log_file == "/var/log/staging.log"
    assert older.diagnose.log_lines == 2000


def test_default_config_has_the_runbook_environments_and_no_demo() -> None:
    config = load_config(DEFAULT)

    # `local` is the console's own (bot/demo/local_env.py): a bot on Slack never checks it.
    assert list(config.environments) == ["dev", "staging", "production"]
    ok, lines = check_config(DEFAULT)
    assert ok
    assert lines == [
        f"{DEFAULT}: OK (3 environments: dev, staging, production)",
        "  dev: a Critical alert does not page (SEV 3 if someone escalates it)",
        "  staging: a Critical alert does not page (SEV 3 if someone escalates it)",
        "  production: a Critical alert opens a SEV 1 incident and pages",
    ]


def test_paging_policy_per_environment_with_defaults_by_name(tmp_path: Path) -> None:
    text = """environments:
  production: {base_url: 'http://p:1', transport: local}
  staging: {base_url: 'http://s:1', transport: local}
  dev: {base_url: 'http://d:1', transport: local}
  qa: {base_url: 'http://q:1', transport: local, severity: 2}
  sandbox: {base_url: 'http://x:1', transport: local, page_on_critical: false}
"""
    config = load_config(write(tmp_path, text))
    policy = {name: tuple(config.paging(name)) for name in config.environments}
    assert policy == {
        "production": (True, 1),
        "staging": (False, 3),
        "dev": (False, 3),
        "qa": (True, 2),
        "sandbox": (False, 1),
    }
    # alerts.page_on_critical, where the file gives it, is the default of every environment
    # without its own key.
    off = load_config(write(tmp_path, text + "alerts: {page_on_critical: false}\n"))
    assert [config.page for config in map(off.paging, off.environments)] == [False] * 5
    on = load_config(write(tmp_path, text + "alerts: {page_on_critical: true}\n"))
    assert [p.page for p in map(on.paging, on.environments)] == [True, True, True, True, False]
    assert on.paging("staging").severity == 3

    bad = text.replace("severity: 2", "severity: 4").replace(
        "page_on_critical: false", "page_on_critical: maybe"
    )
    ok, lines = check_config(write(tmp_path, bad))
    assert not ok
    assert lines == [
        f"{tmp_path / 'eventmesh.yml'}: environments.qa.severity: must be at most 3 (got 4)",
        f"{tmp_path / 'eventmesh.yml'}: environments.sandbox.page_on_critical: expected true "
        "or false, got 'maybe'",
    ]


def test_the_shipped_service_commands_never_wait_for_a_sudo_password() -> None:
    """Over SSH there is no terminal: a sudo that asks for a password hangs until the command
    timeout; `sudo -n` fails at once, saying a password is required."""
    config = load_config(DEFAULT)
    for env in config.environments.values():
        for command in (env.deploy.stop, env.deploy.start, env.deploy.restart):
            words = command.split()
            if "sudo" in words:
                assert words[words.index("sudo") + 1] == "-n", f"{env.name}: {command}"


def test_only_environments_is_required_and_defaults_are_the_runbooks(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))

    assert config.thresholds == Thresholds()
    assert [(t.warning, t.critical) for t in config.thresholds.__dict__.values()] == [
        (500, 2000),
        (200, 1000),
        (70, 85),
        (60, 80),
        (1, 5),
        (30, 40),
    ]
    assert config.environment("local").check_interval == timedelta(seconds=30)
    assert config.environment("local").deploy.install_dir == "/opt/eventmesh/local"
    assert config.alerts.breaches_to_fire == 2
    assert config.escalation.levels == []
    assert config.slack.alerts_channel is None
    assert config.access.deployers == []
    assert config.ci is None


def test_with_base_url_replaces_one_environment_in_a_copy() -> None:
    config = load_config(EXAMPLE)

    moved = config.with_base_url("local", "http://127.0.0.1:40123/")

    assert moved.environment("local").healthz_url == "http://127.0.0.1:40123/healthz"
    assert config.environment("local").base_url == "http://localhost:8080"
    assert moved.environment("dev") == config.environment("dev")
    assert list(moved.environments) == list(config.environments)
    with pytest.raises(KeyError):
        config.with_base_url("nowhere", "http://127.0.0.1:1")
    with pytest.raises(ValueError):
        config.with_base_url("local", "localhost:8080")


def test_channels_and_people_by_name_are_listed_with_their_keys_and_replaced_by_ids(
    tmp_path: Path,
) -> None:
    text = (
        EXAMPLE_TEXT.replace("alerts_channel: C0ALERTS", "alerts_channel: '#ops-alerts'")
        .replace("[U0DEPLOY1, U0DEPLOY2]", "['@alice', alice@example.com, U0DEPLOY2]")
        .replace(
            "{name: CTO, users: [U0CTO]}",
            "{name: CTO, rotation: {members: ['@bob', U0CTO], every: 1w, "
            "handoff: '2026-12-07T09:00:00+01:00'}}",
        )
        .replace("users: [U0ONCALL]", "users: [alice@example.com]")
    )
    path = tmp_path / "eventmesh.yml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)

    assert config.names() == {
        "#ops-alerts": ["slack.alerts_channel"],
        "@alice": ["access.deployers[0]"],
        "alice@example.com": ["access.deployers[1]", "escalation.levels[0].users[0]"],
        "@bob": ["escalation.levels[3].rotation.members[0]"],
    }
    ids = {
        "#ops-alerts": "C0OPS",
        "@alice": "U0ALICE",
        "alice@example.com": "U0ALICE",
        "@bob": "U0BOB",
    }
    resolved = config.with_ids(ids)

    assert resolved.slack.alerts_channel == "C0OPS"
    assert resolved.slack.approvals_channel == "C0APPROVALS"  # ids as written
    assert resolved.access.deployers == ["U0ALICE", "U0DEPLOY2"]  # one person named twice
    assert resolved.escalation.levels[0].users == ["U0ALICE"]
    rotation = resolved.escalation.levels[3].rotation
    assert rotation is not None and rotation.members == ["U0BOB", "U0CTO"]
    assert resolved.names() == {}
    assert config.slack.alerts_channel == "#ops-alerts"  # a copy


def test_unknown_environment_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="known: local, dev, staging, production"):
        load_config(EXAMPLE).environment("qa")


def test_models_are_frozen() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        config.environment("dev").base_url = "http://elsewhere"  # type: ignore[misc]


def test_environment_in_code_infers_ssh_from_hosts() -> None:
    env = Environment(name="edge", base_url="https://edge.example.com/", hosts=["ops@edge:2200"])
    assert env.transport == "ssh"
    assert env.base_url == "https://edge.example.com"
    assert str(env.hosts[0]) == "ops@edge:2200"


# --- broken files: exactly one line each, naming the key and the problem --------------------

BROKEN = {
    "a process name over two lines": (
        edited("  staging:\n", '  staging:\n    process: "riptide\\napi"\n'),
        "environments.staging.process",
        ["is not a process name"],
    ),
    "a log file that is a folder": (
        edited("  staging:\n", "  staging:\n    log_file: /var/log/eventmesh/\n"),
        "environments.staging.log_file",
        ["is not a file path"],
    ),
    "too many log lines to read": (
        edited("  log_lines: 2000", "  log_lines: 50000"),
        "diagnose.log_lines",
        ["at most 10000"],
    ),
    "unknown key in an environment": (
        edited("  staging:\n", "  staging:\n    hostz: [deploy@x]\n"),
        "environments.staging.hostz",
        ["unknown key", "expected one of: base_url, transport, hosts"],
    ),
    "deploy nested in an environment": (
        edited("  staging:\n", "  staging:\n    deploy: {build: make}\n"),
        "environments.staging.deploy",
        ["unknown key", "install_dir"],
    ),
    "unknown top-level section": (
        EXAMPLE_TEXT + "colour: blue\n",
        "colour",
        ["unknown key", "environments"],
    ),
    "unknown key in a section": (
        edited("  keep_backups: 10\n", "  keep_backup: 10\n"),
        "deploy.keep_backup",
        ["unknown key", "keep_backups"],
    ),
    "bad duration": (
        edited("connect_timeout: 10s", "connect_timeout: 10x"),
        "ssh.connect_timeout",
        ["'10x' is not a duration (use 30s, 15m, 1h)"],
    ),
    "duration without unit": (
        edited("repeat_every: 1h", "repeat_every: 60"),
        "alerts.repeat_every",
        ["60 is not a duration"],
    ),
    "hysteresis of a whole threshold": (
        edited("page_on_critical: true", "page_on_critical: true\n  hysteresis_percent: 100"),
        "alerts.hysteresis_percent",
        ["must be less than 100 (got 100)"],
    ),
    "flapping at one change": (
        edited("page_on_critical: true", "page_on_critical: true\n  flapping_changes: 1"),
        "alerts.flapping_changes",
        ["must be at least 2 (got 1)"],
    ),
    "zero duration": (
        edited("check_interval: 15s", "check_interval: 0s"),
        "environments.production.check_interval",
        ["longer than zero"],
    ),
    "environment without base_url": (
        edited("    base_url: http://dev.eventmesh.internal:8080\n", ""),
        "environments.dev.base_url",
        ["missing"],
    ),
    "base_url without scheme": (
        edited("http://dev.eventmesh.internal:8080", "dev.eventmesh.internal:8080"),
        "environments.dev.base_url",
        ["is not http(s)://host[:port][/path]"],
    ),
    "base_url with another scheme": (
        edited("https://api.eventmesh.com", "ftp://api.eventmesh.com"),
        "environments.production.base_url",
        ["'ftp://api.eventmesh.com' is not http(s)://host[:port][/path]"],
    ),
    "host without hostname": (
        edited("[deploy@dev.eventmesh.internal]", "['deploy@']"),
        "environments.dev.hosts[0]",
        ["'deploy@' is not user@host[:port]"],
    ),
    "host port out of range": (
        edited("prod-2.eventmesh.internal:2222", "prod-2.eventmesh.internal:65536"),
        "environments.production.hosts[1]",
        ["is not user@host[:port]", "1-65535"],
    ),
    "threshold upside down": (
        edited(
            "cpu_percent: {warning: 60, critical: 80}", "cpu_percent: {warning: 80, critical: 60}"
        ),
        "thresholds.cpu_percent",
        ["warning (80) must be below critical (60)"],
    ),
    "threshold equal": (
        edited(
            "error_rate_percent: {warning: 1, critical: 5}",
            "error_rate_percent: {warning: 5, critical: 5}",
        ),
        "thresholds.error_rate_percent",
        ["warning (5) must be below critical (5)"],
    ),
    "user written as a Slack mention": (
        edited("U0DEPLOY2", "'<@U0DEPLOY2>'"),
        "access.deployers[1]",
        ["'<@U0DEPLOY2>' is not a Slack user id", "an @handle or an email"],
    ),
    "channel name with capitals": (
        edited("alerts_channel: C0ALERTS", "alerts_channel: '#Ops Alerts'"),
        "slack.alerts_channel",
        ["'#Ops Alerts' is not a Slack channel id", "#channel-name"],
    ),
    "escalation level without timeout": (
        edited("users: [U0LEAD], timeout: 15m", "users: [U0LEAD]"),
        "escalation.levels[1].timeout",
        ["missing", "every level but the last"],
    ),
    "escalation level without users": (
        edited("users: [U0CTO]", "users: []"),
        "escalation.levels[3].users",
        ["must not be empty"],
    ),
    "escalation reminder without unit": (
        edited(
            "    - {name: CTO, users: [U0CTO]}\n",
            "    - {name: CTO, users: [U0CTO]}\n  ack_reminder: 30\n",
        ),
        "escalation.ack_reminder",
        ["30 is not a duration"],
    ),
    "escalation re-open of zero": (
        edited(
            "    - {name: CTO, users: [U0CTO]}\n",
            "    - {name: CTO, users: [U0CTO]}\n  reopen_after: 0s\n",
        ),
        "escalation.reopen_after",
        ["longer than zero"],
    ),
    "escalation user half an email": (
        edited("users: [U0ONCALL]", "users: ['oncall@']"),
        "escalation.levels[0].users[0]",
        ["not a Slack user id"],
    ),
    "environment name with capitals": (
        edited("  staging:\n", "  Staging:\n"),
        "environments.Staging",
        ["not an environment name"],
    ),
    "reserved environment name": (
        edited("  staging:\n", "  all:\n"),
        "environments.all",
        ["'all' is reserved"],
    ),
    "ssh transport without hosts": (
        edited("hosts: [deploy@dev.eventmesh.internal]", "transport: ssh"),
        "environments.dev.hosts",
        ["transport: ssh needs at least one"],
    ),
    "local transport with hosts": (
        edited("transport: local\n", "transport: local\n    hosts: [deploy@localhost]\n"),
        "environments.local.hosts",
        ["transport: local", "takes no hosts"],
    ),
    "neither transport nor hosts": (
        edited("    hosts: [deploy@staging.eventmesh.internal]\n", ""),
        "environments.staging.transport",
        ["missing", "transport: local, or hosts:"],
    ),
    "unknown transport": (
        edited("transport: local", "transport: docker"),
        "environments.local.transport",
        ["'docker' must be 'local' or 'ssh'"],
    ),
    "bad override in an environment": (
        edited("    install_dir: ./data/local/eventmesh\n", "    keep_backups: 0\n"),
        "environments.local.keep_backups",
        ["must be at least 1"],
    ),
    "wrong type": (
        edited("requires_approval: true", "requires_approval: sometimes"),
        "environments.production.requires_approval",
        ["expected true or false", "'sometimes'"],
    ),
    "ci repository without owner": (
        edited("repository: eventmesh/eventmesh", "repository: eventmesh"),
        "ci.repository",
        ["'eventmesh' is not owner/name"],
    ),
    "no environments": (
        "slack: {alerts_channel: C0ALERTS}\n",
        "environments",
        ["required key is missing"],
    ),
    "empty environments": (
        "environments: {}\n",
        "environments",
        ["must not be empty"],
    ),
    "empty file": ("", "", ["empty"]),
    "only comments": ("# nothing here yet\n", "", ["empty"]),
    "top level is a list": ("- local\n- dev\n", "", ["top level must be a mapping"]),
    "YAML syntax error": (
        edited("  dev:\n", "  dev\n"),
        "",
        [f"YAML error at line {DEV_LINE + 1}", "could not find expected ':'"],  # after it
    ),
    "duplicate key": (
        edited("  staging:\n", "  dev:\n"),
        "",
        [f"line {STAGING_LINE}", "duplicate key 'dev'"],
    ),
}


@pytest.mark.parametrize(("text", "key", "words"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_file_gets_exactly_one_line(
    tmp_path: Path, text: str, key: str, words: list[str]
) -> None:
    path = write(tmp_path, text)

    ok, lines = check_config(path)

    assert not ok
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"{path}: {key}: " if key else f"{path}: "), line
    for word in words:
        assert word in line
    assert "\n" not in line
    assert "pydantic" not in line
    assert "validation error" not in line.lower()


def test_load_config_raises_one_line_config_error_with_key_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, edited("[deploy@dev.eventmesh.internal]", "['deploy@']"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    err = caught.value
    assert err.key == "environments.dev.hosts[0]"
    assert err.problem == "'deploy@' is not user@host[:port]"
    assert str(err) == "environments.dev.hosts[0]: 'deploy@' is not user@host[:port]"
    assert err.errors == (err,)


def test_every_problem_of_a_file_gets_its_own_line(tmp_path: Path) -> None:
    text = edited("  staging:\n", "  staging:\n    hostz: 1\n    keep_backups: 0\n")
    text = text.replace("cpu_percent: {warning: 60, critical: 80}", "cpu_percent: {warning: 90}")
    text = text.replace("connect_timeout: 10s", "connect_timeout: soon")

    ok, lines = check_config(write(tmp_path, text))

    assert not ok
    problems = [line.split(": ", 1)[1] for line in lines]
    assert sorted(problems) == sorted(
        [
            "ssh.connect_timeout: 'soon' is not a duration (use 30s, 15m, 1h)",
            "environments.staging.hostz: unknown key (expected one of: base_url, transport, "
            "hosts, requires_approval, check_interval, page_on_critical, severity, workdir, "
            "source, ci_artifact, build, test, artifacts, version, install_dir, backup_dir, "
            "keep_backups, stop, start, restart, verify_timeout, auto_rollback, keep_releases, "
            "smoke, verify_interval, "
            "approval_timeout, watch_for, lock_reminder, followup_every, followup_for, process, "
            "log_file, env)",
            "environments.staging.keep_backups: must be at least 1 (got 0)",
            "thresholds.cpu_percent.critical: required key is missing",
        ]
    )


def test_the_request_counter_settings(tmp_path: Path) -> None:
    unset = "  exclude_paths: []"
    good = edited(
        unset,
        "  requests_counter: http_server_requests_seconds\n  status_label: status\n"
        "  exclude_paths: [/actuator/health]",
    )
    config = load_config(write(tmp_path, good))
    assert config.metrics.requests_counter == "http_server_requests_seconds"
    assert config.metrics.status_label == "status"
    assert config.metrics.exclude_paths == ["/actuator/health"]
    assert load_config(EXAMPLE).metrics.requests_counter is None  # found by itself

    bad = edited(
        unset,
        "  requests_counter: http-requests\n  status_label: 'a b'\n  exclude_paths: [healthz]",
    )
    ok, lines = check_config(write(tmp_path, bad))
    assert not ok
    assert sorted(line.split(": ", 1)[1] for line in lines) == [
        "metrics.exclude_paths[0]: 'healthz' is not a path starting with /",
        "metrics.requests_counter: 'http-requests' is not a Prometheus metric name like "
        "http_requests_total",
        "metrics.status_label: 'a b' is not a Prometheus label name",
    ]


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    assert check_config(path) == (False, [f"{path}: file not found"])
    with pytest.raises(ConfigError, match="file not found"):
        load_config(path)


def test_a_directory_is_one_line(tmp_path: Path) -> None:
    ok, lines = check_config(tmp_path)
    assert not ok
    assert lines == [f"{tmp_path}: is a directory, not a config file"]


# --- the console script -------------------------------------------------------------------

CLI = REPO / "bot" / "cli.py"
SCRIPT = Path(sys.executable).parent / "eventmesh-bot"


@pytest.mark.skipif(
    not (CLI.exists() and "check-config" in CLI.read_text(encoding="utf-8") and SCRIPT.exists()),
    reason="bot/cli.py has no check-config command (or the console script is not installed)",
)
def test_check_config_console_script(tmp_path: Path) -> None:
    good = subprocess.run(
        [str(SCRIPT), "check-config", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
    assert "OK (4 environments: local, dev, staging, production)" in good.stdout
    assert "  production: a Critical alert opens a SEV 1 incident and pages" in good.stdout

    bad_path = write(tmp_path, edited("connect_timeout: 10s", "connect_timeout: 10x"))
    bad = subprocess.run(
        [str(SCRIPT), "check-config", str(bad_path)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    output = (bad.stdout + bad.stderr).strip().splitlines()
    assert output == [
        f"{bad_path}: ssh.connect_timeout: '10x' is not a duration (use 30s, 15m, 1h)"
    ]


# --- durations ----------------------------------------------------------------------------

UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def test_parse_duration_examples() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("1h") == timedelta(hours=1)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)


@given(n=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(UNITS)))
def test_parse_duration_round_trips_one_unit(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == timedelta(**{UNITS[unit]: n})


@given(
    parts=st.dictionaries(
        st.sampled_from(sorted(UNITS)), st.integers(min_value=0, max_value=10**4), min_size=1
    )
)
def test_parse_duration_round_trips_compounds(parts: dict[str, int]) -> None:
    text = "".join(f"{parts[unit]}{unit}" for unit in "dhms" if unit in parts)
    expected = timedelta(**{UNITS[unit]: n for unit, n in parts.items()})
    assert parse_duration(text) == expected


@given(st.text().filter(lambda text: re.search(r"[^0-9dhms]", text) is not None))
def test_parse_duration_rejects_foreign_characters(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6))
def test_parse_duration_rejects_bare_numbers(n: int) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(str(n))


@pytest.mark.parametrize(
    "text",
    ["", "s", "1", "30m1h", "1h1h", "1hh", "1.5h", "-5s", "1H", "h30", "1 h", "99999999999d"],
)
def test_parse_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_config_model_is_usable_without_a_file() -> None:
    env = Environment(name="local", base_url="http://localhost:8080", transport="local")
    config = Config(environments={"local": env})
    assert config.environment("local") is env


def test_deploy_source_is_build_or_ci_and_ci_needs_the_ci_section(tmp_path: Path) -> None:
    def env(**deploy: object) -> dict[str, object]:
        return {"base_url": "http://127.0.0.1:1", "transport": "local", **deploy}

    ci = {"provider": "github", "repository": "eventmesh/eventmesh", "workflow": "ci.yml"}
    default = Config.model_validate({"environments": {"dev": env()}})
    assert default.environments["dev"].deploy.source == "build"
    from_ci = Config.model_validate({"ci": ci, "environments": {"dev": env(source="ci")}})
    assert from_ci.environments["dev"].deploy.source == "ci"
    assert from_ci.environments["dev"].deploy.ci_artifact == "eventmesh-package"

    path = write(tmp_path, json.dumps({"environments": {"dev": env(source="ci")}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        "environments.dev.source: source: ci takes the package from CI: add the `ci` section"
    )
    path = write(tmp_path, json.dumps({"environments": {"dev": env(source="cargo")}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "environments.dev.source: 'cargo' must be 'build' or 'ci'"
