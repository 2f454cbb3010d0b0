"""/health diagnose's checks, host by host, against the loopback sshd and real demo services.

The sshd's "host" is this machine, so a demo service started here is the service on the host:
crashed, its port taken by another process, its log full of errors, or its log missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, Environment
from bot.runbook.health.diagnose import diagnose_hosts
from bot.runbook.health.diagnosis_probe import DiagnosisSpec, HostDiagnosis
from bot.runbook.health.log_lines import Kind
from bot.runbook.health.verdict import Finding, findings
from tests.support.diagnose_env import (
    LoggedService,
    environment,
    start_logged_service,
    wait_for_listener,
)
from tests.support.sshd import Sshd, free_port, start_sshd


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LoggedService]:
    running = start_logged_service(tmp_path)
    yield running
    running.stop()


def ssh_config(sshd: Sshd, envs: dict[str, dict[str, Any]]) -> Config:
    settings = sshd.settings()
    return Config.model_validate(
        {
            "environments": envs,
            "ssh": {
                "key_file": str(settings.key_file),
                "known_hosts": str(settings.known_hosts),
                "connect_timeout": "5s",
                "command_timeout": "60s",
            },
        }
    )


def diagnose(config: Config, name: str = "staging") -> tuple[list[HostDiagnosis], list[Finding]]:
    env = config.environment(name)
    spec = DiagnosisSpec.of(env, config.diagnose.log_lines)

    async def run() -> list[HostDiagnosis]:
        hosts: list[HostDiagnosis | None] = [None] * max(1, len(env.hosts))
        async for index, host in diagnose_hosts(env, config.ssh, spec):
            hosts[index] = host
        return [host for host in hosts if host is not None]

    hosts = asyncio.run(run())
    return hosts, list(findings(spec, hosts, None, config.thresholds, env_name=name))


def issue(found: list[Finding], name: str) -> Finding:
    matching = [f for f in found if f.issue == name]
    assert matching, f"no {name!r} among {[f.issue for f in found]}"
    return matching[0]


def test_a_running_service_with_errors_is_counted_by_type(
    sshd: Sshd, service: LoggedService
) -> None:
    service.write_log(
        ("error", "ConnectionRefused", 7), ("error", "Timeout", 5), ("warn", "SlowQuery", 3)
    )
    config = ssh_config(sshd, {"staging": environment(service, [str(sshd.host)])})

    (host,), found = diagnose(config)

    assert host.problem is None and host.target == str(sshd.host)
    assert host.main_process is not None and host.main_process.pid == service.process.pid
    assert host.main_process.uptime_s >= 0 and host.main_process.rss_bytes > 10 * 1024**2
    assert host.port is not None and host.port.tool == "ss"
    assert [(x.pid, x.address) for x in host.port.listeners] == [
        (service.process.pid, f"127.0.0.1:{service.port}")
    ]
    assert host.local is not None and host.local.ok and host.local.tool == "curl"
    assert host.log is not None and host.log.tally is not None
    counts = [(c.kind, c.type, c.count) for c in host.log.tally.counts]
    assert counts == [
        (Kind.ERROR, "ConnectionRefused", 7),
        (Kind.ERROR, "Timeout", 5),
        (Kind.WARNING, "SlowQuery", 3),
    ]
    assert host.log.tally.total(Kind.ERROR) == 12 and host.log.tally.total(Kind.WARNING) == 3
    assert len(host.log.last_errors) == 5 and "Timeout" in host.log.last_errors[-1]
    assert {d.role for d in host.disks} == {"install", "log"}
    assert all(d.percent is not None for d in host.disks)
    assert host.memory is not None and host.load is not None and host.cpus
    # Running, on its port, answering: the log's errors are the finding, and nothing crashed.
    assert [f.issue for f in found if f.issue != "CPU bottleneck"] == ["Errors in the log"]
    assert "12 errors" in found[0].detail and "`ConnectionRefused` (7×)" in found[0].detail


def test_a_crashed_service_is_not_running_with_its_last_log_lines(
    sshd: Sshd, service: LoggedService
) -> None:
    service.write_log(("error", "ConnectionRefused", 2))
    service.set_faults(crash=True)
    assert service.wait_exited() == 101
    config = ssh_config(sshd, {"staging": environment(service, [str(sshd.host)])})

    (host,), found = diagnose(config)

    assert host.running is False and host.processes == ()
    assert host.port is not None and host.port.listeners == ()
    assert host.local is not None and not host.local.ok
    assert host.local.status is None and "Couldn't connect" in (host.local.problem or "")
    assert host.log is not None and host.log.last_lines[-1].endswith(
        "panic: thread 'main' panicked at 'injected crash (POST /admin/faults)', src/main.rs:42:5"
    )
    crashed = issue(found, "Service crashed")
    assert crashed.detail.startswith(f"`{service.name}` is not running on {sshd.host}; last error")
    assert "panicked" in crashed.detail
    assert found[0].issue == "Service crashed"


def test_a_port_held_by_another_process_names_that_process(
    sshd: Sshd, service: LoggedService
) -> None:
    answer = service.set_faults(hold_port=120)
    holder = answer["holder_pid"]
    assert service.wait_exited() == 1
    wait_for_listener(service.port, holder)
    config = ssh_config(sshd, {"staging": environment(service, [str(sshd.host)])})

    (host,), found = diagnose(config)

    assert host.running is False
    assert host.port is not None
    assert [(x.pid, x.name) for x in host.port.listeners] == [(holder, "port-holder")]
    in_use = issue(found, "Port already in use")
    assert in_use.detail == (
        f"pid {holder} `port-holder` holds {service.port} on {sshd.host}; "
        f"`{service.name}` is not running"
    )
    assert f"kill {holder}" in in_use.next_step
    assert found[0].issue == "Port already in use"
    crashed = issue(found, "Service crashed")
    assert "AddrInUse" in crashed.detail  # its last error: it could not bind


def test_a_missing_log_is_said_and_the_rest_still_runs(sshd: Sshd, service: LoggedService) -> None:
    entry = environment(service, [str(sshd.host)], log_file=str(service.log_file) + ".missing")
    config = ssh_config(sshd, {"staging": entry})

    (host,), found = diagnose(config)

    assert host.log is not None and host.log.problem == "does not exist"
    assert host.running is True and host.local is not None and host.local.ok
    assert host.port is not None and host.port.listeners[0].pid == service.process.pid
    assert all(f.issue == "CPU bottleneck" for f in found)


def test_an_unreachable_host_is_a_finding_and_the_others_are_diagnosed(
    sshd: Sshd, service: LoggedService
) -> None:
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    config = ssh_config(sshd, {"staging": environment(service, [dead, str(sshd.host)])})

    (down, up), found = diagnose(config)

    assert down.target == dead and "connection refused" in (down.problem or "")
    assert up.problem is None and up.running is True
    unreachable = issue(found, "Host not reachable")
    assert unreachable.hosts == (dead,) and not unreachable.runbook


@pytest.fixture
def bare_host(tmp_path: Path, sshd: Sshd, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    """A host whose PATH lacks some tools: a second sshd whose sessions get a PATH of
    symlinks to only the tools the test keeps."""
    keep: tuple[str, ...] = request.param
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in keep:
        # python3 on PATH may be a shell shim (pyenv): the interpreter itself stands in.
        found = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        assert found, f"{tool} is not installed here"
        (tools / tool).symlink_to(found)
    force = f'ForceCommand PATH={tools} exec sh -c "$SSH_ORIGINAL_COMMAND"'
    server = start_sshd(tmp_path / "sshd-bare", client_key=sshd.client_key, extra_config=[force])
    yield server
    server.stop()


CORE = ("timeout", "sh", "ps", "awk", "tail", "dirname", "df", "cat", "getconf")


@pytest.mark.parametrize("bare_host", [(*CORE, "netstat", "wget")], indirect=True)
def test_without_ss_and_curl_netstat_and_wget_answer(
    bare_host: Sshd, service: LoggedService
) -> None:
    config = ssh_config(bare_host, {"staging": environment(service, [str(bare_host.host)])})

    (host,), _ = diagnose(config)

    assert host.port is not None and host.port.tool == "netstat"
    assert [(x.pid, x.address) for x in host.port.listeners] == [
        (service.process.pid, f"127.0.0.1:{service.port}")
    ]
    assert host.local is not None and host.local.tool == "wget" and host.local.status == 200


@pytest.mark.parametrize("bare_host", [(*CORE, "python3")], indirect=True)
def test_with_python_alone_python_asks_healthz(bare_host: Sshd, service: LoggedService) -> None:
    config = ssh_config(bare_host, {"staging": environment(service, [str(bare_host.host)])})

    (host,), _ = diagnose(config)

    assert host.port is not None and host.port.problem == (
        "neither ss nor netstat is installed on the host"
    )
    assert host.local is not None and host.local.tool == "python3" and host.local.ok
    assert host.local.seconds is not None and host.local.seconds < 5
    assert host.running is True and host.log is not None and host.log.tally is not None


@pytest.mark.parametrize("bare_host", [CORE], indirect=True)
def test_with_none_of_them_each_check_says_so(bare_host: Sshd, service: LoggedService) -> None:
    config = ssh_config(bare_host, {"staging": environment(service, [str(bare_host.host)])})

    (host,), found = diagnose(config)

    assert host.problem is None and host.running is True
    assert host.local is not None and host.local.problem == (
        "neither curl, wget nor python3 is installed on the host"
    )
    # Nothing to compare with: no finding is made up from a check that could not be made.
    assert not [f for f in found if f.issue in ("Health check fails", "Port already in use")]


# --- the parsers, on the real tools' output on the host ----------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("tool", ["ss", "netstat"])
def test_listeners_from_the_hosts_own_output(sshd: Sshd, listening: int, tool: str) -> None:
    from bot.runbook.health.diagnosis_probe import parse_listeners

    answer = sshd.run_on_host(f"{tool} -tlnp")
    assert answer.returncode == 0, answer.stderr

    found = parse_listeners([tool, *answer.stdout.splitlines()], listening)

    assert [(x.pid, x.address) for x in found.listeners] == [
        (os.getpid(), f"127.0.0.1:{listening}")
    ]
    # ss names the process by its comm (python…), netstat by the start of its command line.
    assert found.listeners[0].name and "pyt" in found.listeners[0].name


@pytest.mark.parametrize("tool", ["ss", "netstat"])
def test_a_listener_the_user_may_not_see_is_said(sshd: Sshd, listening: int, tool: str) -> None:
    from bot.runbook.health.diagnosis_probe import parse_listeners

    if shutil.which("runuser") is None:
        pytest.skip("runuser is not installed")
    answer = sshd.run_on_host(f"runuser -u nobody -- {tool} -tlnp 2>&1")
    assert answer.returncode == 0, answer.stderr

    found = parse_listeners([tool, *answer.stdout.splitlines()], listening)

    assert found.problem is None
    assert [(x.pid, x.name) for x in found.listeners] == [(None, None)]


def test_curls_own_failure_line(sshd: Sshd) -> None:
    from bot.runbook.health.diagnosis_probe import parse_local_health

    url = f"http://127.0.0.1:{free_port()}/healthz"
    answer = sshd.run_on_host(
        f"curl -sS -m 5 -o /dev/null -w '%{{http_code}} %{{time_total}}\\n' {url} 2>&1"
    )

    found = parse_local_health(["curl", *answer.stdout.splitlines()], url)

    assert found.status is None and not found.ok
    assert found.problem is not None and found.problem.startswith("Failed to connect to 127.0.0.1")


def test_a_command_line_is_shown_redacted() -> None:
    from bot.runbook.health.diagnosis_probe import parse_processes

    processes, _ = parse_processes(["ok", " 42  10 2048  1.5 /opt/bin/riptide-api --token=abc123"])
    assert processes is not None
    assert processes[0].command == "/opt/bin/riptide-api --token=[redacted]"
    assert (processes[0].pid, processes[0].rss_bytes, processes[0].cpu_percent) == (
        42,
        2097152,
        1.5,
    )


def test_ps_failing_is_the_process_checks_problem() -> None:
    from bot.runbook.health.diagnosis_probe import parse_processes

    processes, problem = parse_processes(["failed", "ps: unknown option -- o"])
    assert processes is None and problem == "ps failed: ps: unknown option -- o"


def test_environment_port_and_loopback_url() -> None:
    env = Environment(name="p", base_url="https://api.eventmesh.com/edge", hosts=["d@h"])
    spec = DiagnosisSpec.of(env, 50)
    assert (spec.port, spec.local_url) == (443, "https://127.0.0.1:443/edge/healthz")
    assert (spec.process, spec.log_file) == ("riptide", "/var/log/eventmesh/api.log")
