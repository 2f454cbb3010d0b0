"""The verdict: which of the runbook's common issues fit what the hosts and the bot saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.config import Environment, Thresholds
from bot.runbook.health.diagnosis_probe import (
    DiagnosisSpec,
    Disk,
    HostDiagnosis,
    Listener,
    LocalHealth,
    Memory,
    PortCheck,
    ServiceProcess,
)
from bot.runbook.health.health import Health, HealthResult
from bot.runbook.health.verdict import Finding, findings, memory_growth
from bot.runbook.levels import Level

ENV = Environment(name="staging", base_url="http://staging.internal:8080", hosts=["d@web-1"])
SPEC = DiagnosisSpec.of(ENV, 2000)
URL = SPEC.local_url
SERVICE = ServiceProcess(4242, 600, 200 * 1024**2, 1.5, "/opt/eventmesh/staging/bin/riptide-api")


def host(target: str = "d@web-1", **fields: object) -> HostDiagnosis:
    base: dict[str, object] = {
        "processes": (SERVICE,),
        "port": PortCheck(8080, "ss", (Listener("0.0.0.0:8080", 4242, "riptide-api"),)),
        "local": LocalHealth(URL, "curl", 200, 0.003),
        "memory": Memory(40.0, 4 * 1024**3, 10 * 1024**3),
        "load": (0.5, 0.4, 0.3),
        "cpus": 4,
    }
    base.update(fields)
    return HostDiagnosis(target, **base)  # type: ignore[arg-type]


def bot(status: int | None, health: Health = Health.UNHEALTHY, reason: str = "") -> HealthResult:
    return HealthResult(
        "staging", health, datetime(2026, 1, 1, tzinfo=UTC), status, None, None, (reason,)
    )


def verdict(*hosts: HostDiagnosis, bot_check: HealthResult | None = None) -> list[Finding]:
    return list(findings(SPEC, hosts, bot_check, Thresholds(), env_name="staging"))


def test_a_healthy_host_and_bot_fit_no_issue() -> None:
    assert verdict(host(), bot_check=bot(200, Health.HEALTHY)) == []


def test_healthy_on_the_host_and_unreachable_from_the_bot_is_the_network() -> None:
    (network,) = verdict(host(), bot_check=bot(None, reason="connection timed out"))
    assert (network.issue, network.level, network.runbook) == (
        "Network issues",
        Level.CRITICAL,
        True,
    )
    assert network.detail == (
        "healthy from the host (d@web-1: HTTP 200 in 3 ms on loopback), unreachable from the "
        "bot (connection timed out)"
    )
    assert "firewall rules" in network.next_step and "port 8080" in network.next_step


def test_healthy_on_the_host_and_an_error_status_from_the_bot_is_in_between() -> None:
    (network,) = verdict(host(), bot_check=bot(502, reason="healthz answered HTTP 502"))
    assert network.level is Level.WARNING
    assert "HTTP 502 from the bot" in network.detail


def test_another_process_in_front_that_answers_is_no_fault() -> None:
    """A proxy on base_url's port, the service behind it: healthz answers on the host."""
    proxied = host(port=PortCheck(8080, "ss", (Listener("0.0.0.0:8080", 77, "nginx"),)))
    assert verdict(proxied) == []


def test_another_process_on_the_port_of_a_running_service_that_fails() -> None:
    squatted = host(
        port=PortCheck(8080, "netstat", (Listener("0.0.0.0:8080", 77, "nginx"),)),
        local=LocalHealth(URL, "curl", 404, 0.001),
    )
    (in_use,) = verdict(squatted)
    assert in_use.detail == "pid 77 `nginx` holds 8080 on d@web-1; `riptide` does not hold it"
    assert "kill 77" in in_use.next_step


def test_a_holder_the_user_may_not_see() -> None:
    hidden = host(
        processes=(),
        port=PortCheck(8080, "ss", (Listener("0.0.0.0:8080", None, None),)),
        local=LocalHealth(URL, "curl", problem="Empty reply from server"),
    )
    in_use, crashed = verdict(hidden)
    assert in_use.detail.startswith("a process the SSH user may not see holds 8080 on d@web-1")
    assert crashed.issue == "Service crashed"


def test_running_but_listening_nowhere() -> None:
    (fails,) = verdict(
        host(
            port=PortCheck(8080, "ss", ()),
            local=LocalHealth(URL, "curl", problem="Failed to connect"),
        )
    )
    assert fails.issue == "Health check fails"
    assert fails.detail == "`riptide` runs on d@web-1 but nothing listens on 8080"


def test_failing_even_on_loopback_points_at_the_logs() -> None:
    (fails,) = verdict(host(local=LocalHealth(URL, "curl", 503, 0.002)))
    assert fails.detail == "healthz on d@web-1 itself, on loopback: HTTP 503"
    assert fails.next_step.startswith("Check the service logs")


def test_the_same_issue_on_many_hosts_is_one_finding() -> None:
    down = {"processes": (), "port": PortCheck(8080, "ss", ()), "local": LocalHealth(URL, "curl")}
    found = verdict(*(host(f"d@web-{i}", **down) for i in range(1, 6)), host("d@web-9"))
    (crashed,) = found
    assert crashed.hosts == ("d@web-1", "d@web-2", "d@web-3", "d@web-4", "d@web-5")
    assert crashed.detail == (
        "`riptide` is not running on d@web-1 (also on 4 other hosts: d@web-2, d@web-3, d@web-4 "
        "and 1 more)"
    )


def test_an_unreachable_host_says_why() -> None:
    (unreachable,) = verdict(HostDiagnosis("d@web-2", problem="connection refused at web-2:22"))
    assert unreachable.issue == "Host not reachable" and not unreachable.runbook
    assert unreachable.detail == "d@web-2: connection refused at web-2:22"


def test_resources_out_of_bounds() -> None:
    busy = host(
        memory=Memory(91.0, 9 * 1024**3, 10 * 1024**3),
        load=(9.0, 8.0, 7.0),
        cpus=4,
        disks=(Disk("log", "/var/log", 96.0, 96, 100),),
    )
    found = {f.issue: f for f in verdict(busy)}
    assert found["High resource usage"].detail == "memory 91% on d@web-1 (critical over 85%)"
    assert found["CPU bottleneck"].detail == "load 9.0 on 4 CPUs on d@web-1"
    assert found["CPU bottleneck"].runbook
    assert found["Disk nearly full"].detail.startswith("96% used where the log folder is")


def test_memory_growth_from_the_scheduled_readings() -> None:
    interval = timedelta(seconds=30)
    rising = [52.0, 55.0, 55.0, 60.0, 66.0, 71.0, 75.0, 81.0]
    growth = memory_growth([None, *rising], interval)
    assert growth is not None
    assert (growth.first, growth.last, growth.readings) == (52.0, 81.0, 8)
    assert growth.span == timedelta(minutes=3, seconds=30)
    found = list(findings(SPEC, [host()], None, Thresholds(), growth, env_name="staging"))
    assert [(f.issue, f.level) for f in found] == [("Memory leak", Level.WARNING)]
    assert found[0].detail.startswith("memory rose from 52% to 81% over the last 8 scheduled")
    # A busy hour goes up and down; a short history proves nothing; a small rise is no leak.
    assert memory_growth([50, 70, 45, 72, 44, 75, 46, 80], interval) is None
    assert memory_growth([50, 60, 70, 80], interval) is None
    assert memory_growth([50, 51, 52, 53, 54, 55, 56], interval) is None


def test_an_unseen_holder_beside_a_running_service_may_be_the_service() -> None:
    """ss names only the SSH user's own processes: the service may run as another user."""
    unseen = host(
        port=PortCheck(8080, "ss", (Listener("0.0.0.0:8080", None, None),)),
        local=LocalHealth(URL, "curl", 503, 0.002),
    )
    (fails,) = verdict(unseen)
    assert fails.issue == "Health check fails"


def test_a_name_that_matches_several_processes_none_on_the_port_is_questioned() -> None:
    other = ServiceProcess(5151, 60, 1024**2, 0.0, "vim /etc/riptide.conf")
    (fails,) = verdict(
        host(
            processes=(SERVICE, other),
            port=PortCheck(8080, "ss", ()),
            local=LocalHealth(URL, "curl", problem="Failed to connect"),
        )
    )
    assert fails.detail == (
        "`riptide` runs on d@web-1 but nothing listens on 8080 (2 processes match `riptide`: "
        "is the name specific enough?)"
    )
