"""LocalTransport: real subprocesses, real files; the same contract as SSH."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path

import pytest

from bot.config import Environment, SshSettings
from bot.transport import (
    CommandTimedOut,
    LocalTransport,
    Shell,
    TransportError,
    local,
    open_transports,
)
from bot.transport.output import OUTPUT_LIMIT
from tests.support.processes import alive, read_pid, wait_gone

TRICKY = "a b; $(id) `id` 'single' \"double\" \\ $HOME *"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_argv_words_arrive_as_one_literal_argument_each() -> None:
    result = run(LocalTransport().run(["printf", "%s|", TRICKY, "second"]))
    assert result.ok and result.stdout == f"{TRICKY}|second|"
    assert result.target == "local"
    assert result.command.startswith("printf ")


def test_shell_commands_run_through_sh() -> None:
    result = run(LocalTransport().run(Shell("echo one; echo two >&2; exit 3")))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "one\n", "two\n")
    assert not result.ok
    assert result.tail() == "one\ntwo"


def test_cwd_and_stdin(tmp_path: Path) -> None:
    result = run(LocalTransport().run(Shell("pwd; cat"), cwd=str(tmp_path), stdin=b"fed in"))
    assert result.stdout == f"{tmp_path}\nfed in"


def test_a_command_that_does_not_read_its_stdin_still_gives_its_result() -> None:
    data = os.urandom(8 * 1024 * 1024)  # more than a pipe holds
    result = run(LocalTransport().run(Shell("echo ignored; exit 4"), stdin=data))
    assert (result.exit_status, result.stdout) == (4, "ignored\n")


def test_a_missing_program_or_directory_is_a_failed_result(tmp_path: Path) -> None:
    missing = run(LocalTransport().run(["no-such-program-here"]))
    assert missing.exit_status == 127 and "command not found" in missing.stderr
    nowhere = run(LocalTransport().run(["true"], cwd=str(tmp_path / "nope")))
    assert nowhere.exit_status == 2 and "cannot change directory" in nowhere.stderr


def test_big_output_on_both_streams_does_not_deadlock_and_keeps_the_tail() -> None:
    five_mib = 5 * 1024 * 1024
    script = (
        f"head -c {five_mib} /dev/zero | tr '\\0' x; head -c {five_mib} /dev/zero >&2; echo END"
    )
    result = run(LocalTransport().run(Shell(script)))
    assert result.ok
    dropped = five_mib + 4 - OUTPUT_LIMIT
    assert result.stdout.startswith(f"[{dropped} earlier bytes of output not kept]\n")
    assert result.stdout.endswith("x" * 1000 + "END\n")
    assert result.stderr.endswith("\0" * 1000)


def test_a_timeout_stops_the_command_and_every_process_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(CommandTimedOut) as caught:
        run(LocalTransport().run(Shell(f"sleep 300 & echo $! > {pid_file}; wait"), timeout_s=1))
    assert str(caught.value).startswith("local: `sleep 300 & echo")
    assert "ran longer than 1s and was stopped" in str(caught.value)
    assert wait_gone(read_pid(pid_file)), "the command's child survived its timeout"


def test_a_child_that_ignores_sigterm_is_killed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "TERM_GRACE_S", 0.5)
    pid_file = tmp_path / "stubborn.pid"
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pid_file}; while :; do sleep 1; done' & wait"
    with pytest.raises(CommandTimedOut):
        run(LocalTransport().run(Shell(script), timeout_s=1))
    assert wait_gone(read_pid(pid_file))


def test_cancelling_a_run_stops_its_processes(tmp_path: Path) -> None:
    pid_file = tmp_path / "cancelled.pid"

    async def cancel_midway() -> None:
        task = asyncio.create_task(
            LocalTransport().run(Shell(f"sleep 300 & echo $! > {pid_file}; wait"))
        )
        await asyncio.to_thread(read_pid, pid_file)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_midway())
    assert wait_gone(read_pid(pid_file))


def test_a_background_process_holding_the_output_open_does_not_hang_the_command(
    tmp_path: Path,
) -> None:
    """A restart command that starts a daemon without redirecting its output returns."""
    pid_file = tmp_path / "daemon.pid"
    result = run(LocalTransport().run(Shell(f"sleep 300 & echo $! > {pid_file}; echo started")))
    daemon = read_pid(pid_file)
    try:
        assert result.ok and result.stdout == "started\n"
        assert alive(daemon), "a command that exits normally leaves its daemons running"
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_slack_secrets_do_not_reach_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-must-not-leak")
    monkeypatch.setenv("EVENTMESH_PROBE", "visible")
    result = run(LocalTransport().run(["env"]))
    assert "EVENTMESH_PROBE=visible" in result.stdout
    assert "xoxb-must-not-leak" not in result.stdout and "SLACK_" not in result.stdout


def test_upload_copies_verified_then_skips_the_same_file(tmp_path: Path) -> None:
    source = tmp_path / "eventmesh-1.0.tar.gz"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    source.chmod(0o750)
    destination = tmp_path / "host" / "releases" / "eventmesh-1.0.tar.gz"

    async def twice() -> tuple:  # type: ignore[type-arg]
        transport = LocalTransport()
        try:
            first = await transport.upload(source, str(destination))
            second = await transport.upload(source, str(destination))
            source.write_bytes(b"a different build")
            third = await transport.upload(source, str(destination))
            return first, second, third
        finally:
            await transport.close()

    first, second, third = run(twice())
    assert not first.skipped and first.size == 3 * 1024 * 1024 + 17
    assert second.skipped and second.sha256 == first.sha256
    assert not third.skipped and third.sha256 == hashlib.sha256(b"a different build").hexdigest()
    assert destination.read_bytes() == b"a different build"
    assert destination.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in destination.parent.iterdir()) == [destination.name]


def test_upload_of_a_file_that_is_not_the_one_approved_replaces_nothing(tmp_path: Path) -> None:
    source = tmp_path / "eventmesh-2.0.tar.gz"
    source.write_bytes(b"the approved build")
    approved = hashlib.sha256(b"the approved build").hexdigest()
    destination = tmp_path / "host" / "eventmesh-2.0.tar.gz"
    sent = run(LocalTransport().upload(source, str(destination), sha256=approved))
    assert not sent.skipped and sent.sha256 == approved
    source.write_bytes(b"a build nobody approved")
    with pytest.raises(TransportError) as caught:
        run(LocalTransport().upload(source, str(destination), sha256=approved))
    message = str(caught.value)
    assert f"expected {approved}" in message and "was not replaced" in message
    assert destination.read_bytes() == b"the approved build"
    assert sorted(p.name for p in destination.parent.iterdir()) == [destination.name]


def test_upload_of_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(TransportError) as caught:
        run(LocalTransport().upload(tmp_path / "missing.tar.gz", str(tmp_path / "out")))
    message = str(caught.value)
    assert message.startswith("local: cannot copy ") and "No such file" in message
    assert "\n" not in message


def test_open_transports_for_a_local_environment() -> None:
    env = Environment(name="local", base_url="http://127.0.0.1:1", transport="local")
    ssh = SshSettings(command_timeout="42s")

    async def use() -> list[str]:
        async with open_transports(env, ssh) as hosts:
            assert [type(h) for h in hosts] == [LocalTransport]
            assert hosts[0].command_timeout_s == 42  # type: ignore[attr-defined]
            return [(await h.run(["echo", "hi"])).stdout for h in hosts]

    assert run(use()) == ["hi\n"]
