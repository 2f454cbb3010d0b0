"""The console, driven as a person would: a pseudo-terminal, typed commands, pressed buttons."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import httpx
import pexpect
import pytest
import yaml

from tests.conftest import REPO, DemoService, clean_env, free_port, write_config
from tests.support.alerts import alerts_config
from tests.support.diagnose_env import wait_gone
from tests.support.health_reports import png_size

CONSOLE_SCRIPT = Path(sys.executable).with_name("eventmesh-bot")
PROMPT = "eventmesh> "
OPENED = r"Opened (?:\x1b\[[0-9;]*m)?INC-(\d+)"  # /escalate's answer, its number in bold


def plain(screen: str) -> str:
    """What a person reads: the screen without the terminal's bold and dim sequences."""
    return re.sub(r"\x1b\[[0-9;]*m", "", screen)


def spawn_console(tmp_path: Path, **env: str) -> pexpect.spawn:
    if not CONSOLE_SCRIPT.exists():
        pytest.fail(f"{CONSOLE_SCRIPT} is missing: install the package (scripts/test does)")
    child = pexpect.spawn(
        str(CONSOLE_SCRIPT),
        cwd=str(tmp_path),
        env=clean_env(EVENTMESH_DATA_DIR=str(tmp_path / "data"), **env),
        encoding="utf-8",
        timeout=20,
        dimensions=(50, 160),
    )
    child.logfile_read = (tmp_path / "console.log").open("w")
    child.expect_exact("local console")
    child.expect_exact(PROMPT)
    return child


def left(child: pexpect.spawn) -> None:
    """The console ended, and cleanly."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_health_all_then_press_button_then_exit(
    tmp_path: Path, bot_config: Path, demo: DemoService
) -> None:
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(bot_config), PORT=str(free_port()))
    child.sendline("/health all")
    # The report is complete when its button is listed; the next prompt follows it.
    child.expect(r"Health · all environments(.|\n)*\[(\d+)\] Check again")
    button = child.match.group(2)
    report = plain(child.before + child.after)
    for name in ("local", "dev", "staging"):
        assert f"{name} — Healthy" in report
    assert "production — Unhealthy" in report
    assert "connection refused" in report
    child.expect_exact(PROMPT)

    # The report is updated in place, and its button keeps its number press after press.
    demo.set_faults(healthz_status=503)
    child.sendline(button)
    child.expect_exact("updated")
    child.expect(r"\[(\d+)\] Check again")
    assert child.match.group(1) == button
    assert "staging — Unhealthy" in plain(child.before)
    child.expect_exact(PROMPT)

    demo.reset()
    child.sendline(button)
    child.expect_exact("updated")
    child.expect(r"\[(\d+)\] Check again")
    assert child.match.group(1) == button
    assert "staging — Healthy" in plain(child.before)
    child.expect_exact(PROMPT)

    child.sendline("/health nosuchenv")
    child.expect_exact("only you can see this")
    child.expect_exact("Unknown environment")
    child.expect_exact(PROMPT)

    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_embedded_default_starts_the_demo_service_and_leaves_on_ctrl_d(tmp_path: Path) -> None:
    # The quick start: no Slack variables, the repository's own config, the demo service.
    shutil.copytree(REPO / "config", tmp_path / "config")
    child = spawn_console(tmp_path)
    child.sendline("/health local")
    child.expect(r"\[\d+\] Check again")
    assert "local — Healthy" in plain(child.before), child.before
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_health_report_prints_the_figures_and_saves_the_chart(tmp_path: Path) -> None:
    # The embedded default: the repository's config and its sample metrics/ files.
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    child = spawn_console(tmp_path)
    child.sendline("/health report")
    child.expect(r"saved to (\S+\.png)")
    path = Path(child.match.group(1))
    screen = plain(child.before)
    assert "Metrics report · last 10 builds" in screen
    assert "31.4 min · Warning" in screen and "41.8 min · Critical" in screen
    assert "99.8%" in screen and "79.6%" in screen
    assert path.is_relative_to(tmp_path / "data" / "files")
    assert png_size(path.read_bytes()) == (800, 400)
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_watch_reports_at_the_prompt_and_its_numbered_stop_button_ends_it(
    tmp_path: Path, bot_config: Path, demo: DemoService
) -> None:
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(bot_config), PORT=str(free_port()))
    child.sendline("/health staging watch 1h")
    # The watch runs in the long lane: the prompt is back at once, the watch prints below it.
    child.expect(r"Watching staging(.|\n)*\[(\d+)\] Stop")
    assert PROMPT in child.before  # printed while the person sits at the prompt
    assert "Healthy" in plain(child.after)
    child.sendline(child.match.group(2))
    child.expect(r"Watch of staging · stopped(.|\n)*stopped by @UCONSOLE at")
    assert "1 reading" in plain(child.before + child.after)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_deploy_local_for_real_then_health_shows_the_new_version(tmp_path: Path) -> None:
    # The embedded default on a fresh machine: the first release is the package's own, then
    # /deploy local builds, installs and restarts a new one through the local transport.
    shutil.copytree(REPO / "config", tmp_path / "config")
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.timeout = 90
    child.sendline("/health local")
    child.expect(r"\[\d+\] Check again")
    assert "local — Healthy" in plain(child.before) and "v0.1.0" in plain(child.before)
    child.expect_exact(PROMPT)

    child.sendline("/deploy local 1.4.2")
    child.expect(r"Deployed v1\.4\.2 to local \(1 host\)")
    child.expect_exact(PROMPT)
    child.sendline("/health local")
    child.expect(r"\[\d+\] Check again")
    assert re.search(r"local — Healthy · \d+ ms · v1\.4\.2", plain(child.before))
    child.expect_exact(PROMPT)
    installed = tmp_path / "data" / "local" / "eventmesh"
    assert (installed / "current").readlink().name.endswith("-1.4.2")
    assert (installed / "bin").readlink() == Path("current/bin")

    child.sendline("/deploy local 1.4.3-broken --skip-tests")
    child.expect(r"Rolled back to v1\.4\.2: v1\.4\.3-broken failed its health check")
    child.expect_exact(PROMPT)
    child.sendline("/health local")
    child.expect(r"\[\d+\] Check again")
    assert re.search(r"local — Healthy · \d+ ms · v1\.4\.2", plain(child.before))
    child.expect_exact(PROMPT)

    # Two good deploys, then /rollback local: the first comes back (never the bad one between).
    child.sendline("/deploy local 1.4.4 --skip-tests")
    child.expect(r"Deployed v1\.4\.4 to local \(1 host\)")
    child.expect_exact(PROMPT)
    child.sendline("/rollback local")
    child.expect(r"Rolled back local from v1\.4\.4 to v1\.4\.2\.")
    child.expect_exact(PROMPT)
    child.sendline("/health local")
    child.expect(r"\[\d+\] Check again")
    assert re.search(r"local — Healthy · \d+ ms · v1\.4\.2", plain(child.before))
    child.expect_exact(PROMPT)
    assert (installed / "current").readlink().name.endswith("-1.4.2")
    assert any(p.name.endswith("-1.4.4") for p in (installed / "releases").iterdir())

    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    service = json.loads((tmp_path / "data" / "local" / "service.json").read_text())
    assert service["pid"] is None  # the console stopped the service it ran


def test_production_approval_walked_through_alone_with_as(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    # production builds what local builds (cargo is not here): the package is built, tested and
    # packaged before the approver is asked.
    shipped = tmp_path / "config" / "eventmesh.yml"
    config = yaml.safe_load(shipped.read_text())
    # The demo's release builder, as the console's own local uses it (bot/demo/local_env.py).
    build = tmp_path / "build"
    launcher = build / "eventmesh-api"
    config["environments"]["production"].update(
        {
            "build": f"python -m bot.demo.release build --out {build}",
            "test": f"python -m bot.demo.release test {launcher}",
            "artifacts": [str(launcher)],
        }
    )
    shipped.write_text(yaml.safe_dump(config))
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.timeout = 90
    child.sendline("/deploy production 2.0.0")
    child.expect(r"Building v2\.0\.0 for production before asking for approval")
    child.expect(r"Approval needed: deploy v2\.0\.0 to production")
    child.expect(r"sha256:\S* \S*[0-9a-f]{64}")
    child.expect(r"\[(\d+)\] Approve\s+\[(\d+)\] Reject")
    approve = child.match.group(1)
    child.expect_exact(PROMPT)
    child.sendline(approve)
    child.expect_exact("Only approvers may press Approve. (access.approvers in the config)")
    child.expect_exact(PROMPT)
    child.sendline("as U0APPROVER1")
    child.expect_exact("You are now U0APPROVER1.")
    child.expect_exact(PROMPT)
    child.sendline(approve)
    child.expect_exact("by @U0APPROVER1 at")
    # production's hosts do not resolve from here: the deploy says so and changes nothing.
    child.expect(
        r"Deploy of v2\.0\.0 to production did not start: none of production's 2 hosts can be "
        r"reached from this machine"
    )
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)


def test_alerts_are_one_summary_line_and_alerts_shows_them_with_their_buttons(
    tmp_path: Path, demo: DemoService
) -> None:
    config = alerts_config(
        tmp_path / "eventmesh.yml",
        {"local": demo.url},
        alerts_channel="C0ALERTS",
        incidents_channel="C0INCIDENTS",
    )
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(config), PORT=str(free_port()))
    banner = (tmp_path / "console.log").read_text()
    assert "scheduled checks of 1 environment(s) every 1s; one line per round" in banner
    demo.set_faults(path_latency_ms={"/healthz": 700})
    child.expect(r"🔔 1 alert message\(s\) new or changed: (.*) — /alerts shows them", timeout=30)
    assert "Health check response" in child.match.group(1)
    assert "Acknowledge" not in plain(child.before)  # the message itself waits for /alerts
    child.sendline("/alerts")
    child.expect(r"Health check response(.|\n)*\[(\d+)\] Acknowledge")
    screen = plain(child.before + child.after)
    assert "Warning · local · Health check response" in screen
    assert "warning at 500 ms, critical over 2,000 ms" in screen
    child.sendline(child.match.group(2))
    child.expect_exact("no more reminders for this alert")  # the answer, to the presser
    child.expect(r"🔔 1 alert message\(s\) new or changed")  # the alert, changed for everyone
    child.sendline("/alerts")
    child.expect(r"updated(.|\n)*Acknowledged by @UCONSOLE")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_clears_the_line_and_twice_on_an_empty_line_leaves(
    tmp_path: Path, bot_config: Path
) -> None:
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(bot_config), PORT=str(free_port()))
    child.send("/health nosuchenv")  # half-typed, then given up on
    child.sendcontrol("c")
    child.expect_exact("^C")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    child.sendline("/escalate help")  # runs alone: the half-typed text was cleared
    child.expect_exact("only you can see this")
    child.expect_exact("Usage of /escalate")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    assert "Unknown environment" not in plain(child.before)

    child.sendcontrol("c")  # on an empty line: a hint, still here
    child.expect_exact("(Ctrl-C again to leave; 'exit' or Ctrl-D also leave)")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    child.sendcontrol("c")
    left(child)


def test_the_prompt_names_you_and_as_runs_one_command_as_someone_else(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "eventmesh.yml",
        {"local": "http://127.0.0.1:9"},
        slack={"incidents_channel": "C0INCIDENTS"},
        access={"approvers": ["U0APPROVER1"]},
        escalation={
            "levels": [
                {"name": "On-call", "users": ["U0ONCALL"], "timeout": "1h"},
                {"name": "Lead", "users": ["U0LEAD"]},
            ]
        },
    )
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(config), PORT=str(free_port()))
    child.sendline("/escalate queue consumers stuck")
    child.expect_exact("→ DM @U0ONCALL")
    child.expect(r"\[\d+\] Acknowledge")
    child.expect_exact(f"UCONSOLE {PROMPT}")

    # A person who lost the page acknowledges by name; the buttons' rules hold.
    child.sendline("/escalate ack INC-1")
    child.expect_exact("Only the people paged for INC-1")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    child.sendline("as U0ONCALL /escalate ack INC-1")
    child.expect_exact("INC-1 acknowledged: its messages show it.")
    child.expect_exact("Acknowledged by @U0ONCALL")
    child.expect_exact(f"UCONSOLE {PROMPT}")  # one command as U0ONCALL, then yourself again

    child.sendline("as U0APPROVER1")
    child.expect_exact("You are now U0APPROVER1.")
    child.expect_exact(f"U0APPROVER1 {PROMPT}")
    child.sendline("/escalate resolve INC-1")
    child.expect_exact("INC-1 resolved: its messages show it.")
    child.expect_exact(f"U0APPROVER1 {PROMPT}")
    child.sendline("exit")
    left(child)


def test_the_embedded_default_diagnoses_its_crashed_demo_service(tmp_path: Path) -> None:
    """The console's own demo service, crashed by its fault: /health local diagnose says so.

    The log's path is absolute here (the data directory is): it is in the service's command
    line, which is how the diagnosis finds the process among other consoles' services."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    child = spawn_console(tmp_path)
    state = json.loads((tmp_path / "data" / "local" / "service.json").read_text())
    faults = f"http://127.0.0.1:{state['port']}/admin/faults"
    httpx.post(faults, json={"crash": True}, timeout=10).raise_for_status()
    wait_gone(state["pid"])

    child.sendline("/health local diagnose")
    child.expect(r"\[\d+\] Logs   \[\d+\] Roll back   \[(\d+)\] Restart service")
    restart = child.match.group(1)
    text = plain(child.before)
    assert "Service crashed →" in text and "is not running on local" in text
    assert "panicked at 'injected crash (POST /admin/faults)'" in text
    child.expect_exact(PROMPT)
    # Restart service: the supervisor's restart, verified healthy, as a change of its own.
    child.sendline(restart)
    child.expect_exact("Restarted the service on local: 1 host, healthy.", timeout=60)
    assert httpx.get(f"http://127.0.0.1:{state['port']}/healthz", timeout=5).status_code == 200
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_console_adds_its_local_and_reset_starts_the_demo_afresh(
    tmp_path: Path,
) -> None:
    """The shipped config has no `local`: the console adds its own; /reset at the prompt and
    --reset at the start clear the demo's store."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    child = spawn_console(tmp_path, PORT=str(free_port()))
    child.timeout = 60
    assert "(./scripts/run --reset or /reset starts afresh)" in plain(child.before)
    child.sendline("/escalate first page")  # something to be gone after the reset
    child.expect(OPENED)
    assert child.match.group(1) == "1"
    child.expect_exact(PROMPT)
    child.sendline("/escalate second page")
    child.expect(OPENED)
    assert child.match.group(1) == "2"
    child.expect_exact(PROMPT)
    child.sendline("/reset")
    child.expect_exact("Starting the demo afresh")
    child.expect_exact("the demo starts afresh")
    child.expect_exact("local console")
    child.expect_exact(PROMPT)
    child.sendline("/escalate third page")
    child.expect(OPENED)
    assert child.match.group(1) == "1"  # a fresh store: numbering starts over
    child.expect_exact(PROMPT)
    child.sendline("exit")
    left(child)

    again = pexpect.spawn(
        str(CONSOLE_SCRIPT),
        ["--reset"],
        cwd=str(tmp_path),
        env=clean_env(EVENTMESH_DATA_DIR=str(tmp_path / "data"), PORT=str(free_port())),
        encoding="utf-8",
        timeout=30,
    )
    again.expect_exact("the demo starts afresh")
    again.expect_exact(PROMPT)
    again.sendline("/escalate fourth page")
    again.expect(OPENED)
    assert again.match.group(1) == "1"
    again.expect_exact(PROMPT)
    again.sendline("exit")
    left(again)
