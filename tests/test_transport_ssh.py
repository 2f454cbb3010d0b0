"""SshTransport against a real OpenSSH sshd on loopback (tests/support/sshd.py).

The "host" is this machine, so what a command did there (a process left running, a file
written) is checked directly, or through OpenSSH's own client (`sshd.run_on_host`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from bot.config import Environment, Host
from bot.transport import (
    CommandTimedOut,
    ConnectFailed,
    HostKeyRejected,
    Shell,
    SshTransport,
    TransportError,
    open_transports,
)
from bot.transport.output import OUTPUT_LIMIT
from bot.transport.ssh import MAX_OPENING, receiver_script, remote_command
from tests.support.processes import alive, read_pid, wait_gone
from tests.support.sshd import Sshd, free_port, keygen

T = TypeVar("T")

TRICKY = "a b; $(id) `id` 'single' \"double\" \\ $HOME * \n second line"


def with_transport(
    sshd: Sshd, use: Callable[[SshTransport], Awaitable[T]], **settings: object
) -> T:
    """Run `use` on a fresh transport to the loopback host, and close it afterwards."""

    async def main() -> T:
        transport = SshTransport(sshd.host, sshd.settings(**settings))  # type: ignore[arg-type]
        try:
            return await use(transport)
        finally:
            await transport.close()

    return asyncio.run(main())


def accepted_logins(sshd: Sshd) -> int:
    return sshd.log_text().count("Accepted publickey")


# --- commands ----------------------------------------------------------------------------


def test_argv_words_reach_the_host_as_one_literal_argument_each(sshd: Sshd) -> None:
    result = with_transport(sshd, lambda t: t.run(["printf", "[%s]", TRICKY, "", "last"]))
    assert result.ok, result
    assert result.stdout == f"[{TRICKY}][][last]"
    assert result.target == f"{sshd.user}@127.0.0.1:{sshd.port}"


def test_shell_commands_non_zero_exit_and_separate_streams(sshd: Sshd) -> None:
    result = with_transport(sshd, lambda t: t.run(Shell("echo out; echo err >&2; exit 3")))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.command == "echo out; echo err >&2; exit 3"


def test_cwd_with_spaces_and_stdin(sshd: Sshd, tmp_path: Path) -> None:
    workdir = tmp_path / "a dir; $(id)"
    workdir.mkdir()
    result = with_transport(sshd, lambda t: t.run(Shell("pwd; cat"), cwd=str(workdir),
                                                  stdin=b"fed in"))  # fmt: skip
    assert result.stdout == f"{workdir}\nfed in"
    missing = with_transport(sshd, lambda t: t.run(["true"], cwd=str(tmp_path / "nope")))
    assert missing.exit_status == 2 and "nope" in missing.stderr


def test_no_pty_and_stdin_closed_so_nothing_waits_for_a_prompt(sshd: Sshd) -> None:
    """What keeps `sudo` (without -n) from hanging the channel on a password prompt."""

    async def both(t: SshTransport) -> tuple:  # type: ignore[type-arg]
        return await t.run(["tty"]), await t.run(["cat"])

    tty, cat = with_transport(sshd, both)
    assert tty.exit_status == 1 and "not a tty" in tty.stdout
    assert cat.ok and cat.stdout == ""


def test_big_output_on_both_streams_does_not_deadlock(sshd: Sshd) -> None:
    five_mib = 5 * 1024 * 1024
    script = (
        f"head -c {five_mib} /dev/zero | tr '\\0' x; head -c {five_mib} /dev/zero >&2; echo END"
    )
    result = with_transport(sshd, lambda t: t.run(Shell(script)))
    assert result.ok
    assert result.stdout.startswith(f"[{five_mib + 4 - OUTPUT_LIMIT} earlier bytes")
    assert result.stdout.endswith("x" * 1000 + "END\n")
    assert len(result.stderr) > OUTPUT_LIMIT  # the tail of stderr, with its note


def test_stdin_larger_than_the_window_echoed_back_does_not_deadlock(sshd: Sshd) -> None:
    data = os.urandom(6 * 1024 * 1024).hex().encode()  # 12 MiB, echoed back as it is read
    result = with_transport(sshd, lambda t: t.run(Shell("cat; echo done >&2"), stdin=data))
    assert result.ok and result.stderr == "done\n"
    assert result.stdout.endswith(data[-1000:].decode())


def test_a_command_that_does_not_read_its_stdin_still_gives_its_result(sshd: Sshd) -> None:
    data = os.urandom(8 * 1024 * 1024)  # more than the channel's window
    result = with_transport(sshd, lambda t: t.run(Shell("echo ignored; exit 4"), stdin=data))
    assert (result.exit_status, result.stdout) == (4, "ignored\n")


def test_the_remote_command_runs_under_timeout_with_a_kill_after() -> None:
    line = remote_command(Shell("make && make install"), "/srv/app dir", 900)
    assert line == (
        "timeout -k 10 900 sh -c 'cd '\"'\"'/srv/app dir'\"'\"' || exit 2\nmake && make install'"
    )
    assert remote_command(["echo", "x"], None, 1.5).startswith("timeout -k 10 1.5 sh -c ")


def test_a_command_timeout_stops_the_command_and_its_children_on_the_host(
    sshd: Sshd, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimedOut) as caught:
        with_transport(sshd, lambda t: t.run(Shell(f"sleep 300 & echo $! > {pid_file}; wait"),
                                             timeout_s=1))  # fmt: skip
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(f"{sshd.user}@127.0.0.1:{sshd.port}: `sleep 300 & echo")
    assert "ran longer than 1s and was stopped on the host" in message and "\n" not in message
    assert wait_gone(read_pid(pid_file)), "the remote child outlived the command's timeout"


def test_the_host_stops_the_command_even_when_the_client_has_gone(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Without a pty, closing the channel does not stop a remote process: `timeout` must."""
    pid_file = tmp_path / "orphan.pid"

    async def walk_away(t: SshTransport) -> None:
        task = asyncio.create_task(
            t.run(Shell(f"sleep 300 & echo $! > {pid_file}; wait"), timeout_s=3)
        )
        await asyncio.to_thread(read_pid, pid_file)
        task.cancel()  # closes the channel; the client will never hear of this command again
        with pytest.raises(asyncio.CancelledError):
            await task

    with_transport(sshd, walk_away)
    child = read_pid(pid_file)
    assert alive(child), "closing the channel alone should not have stopped it"
    assert wait_gone(child, timeout=20), "the host did not stop the command at its timeout"


def test_a_background_process_holding_the_output_does_not_hang_the_command(
    sshd: Sshd, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon.pid"
    result = with_transport(
        sshd, lambda t: t.run(Shell(f"sleep 300 & echo $! > {pid_file}; echo started"))
    )
    daemon = read_pid(pid_file)
    try:
        assert result.ok and result.stdout == "started\n"
        assert alive(daemon), "a command that ends in time leaves its daemons running"
    finally:
        os.kill(daemon, 9)


def test_one_connection_is_reused_for_many_commands(sshd: Sshd) -> None:
    before = accepted_logins(sshd)

    async def three(t: SshTransport) -> list[str]:
        return [(await t.run(["echo", str(i)])).stdout for i in range(3)]

    assert with_transport(sshd, three) == ["0\n", "1\n", "2\n"]
    assert accepted_logins(sshd) - before == 1


# --- host keys ---------------------------------------------------------------------------


def other_key(tmp_path: Path, key_type: str = "ed25519") -> str:
    return keygen(tmp_path / f"other_{key_type}", key_type)


def refusal(sshd: Sshd, known_hosts: Path) -> str:
    with pytest.raises(HostKeyRejected) as caught:
        with_transport(sshd, lambda t: t.run(["true"]), known_hosts=known_hosts)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_changed_host_key_is_refused_naming_the_host_and_the_fix(
    sshd: Sshd, tmp_path: Path
) -> None:
    known = sshd.known_hosts(f"{sshd.known_hosts_name} {other_key(tmp_path)}", types=())
    before = accepted_logins(sshd)
    message = refusal(sshd, known)
    assert message.startswith(f"{sshd.user}@127.0.0.1:{sshd.port}: HOST KEY CHANGED")
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known}" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known}" in message
    assert accepted_logins(sshd) == before, "the client authenticated to a host it refused"


def test_a_stale_key_of_the_preferred_type_is_refused_even_if_another_type_matches(
    sshd: Sshd, tmp_path: Path
) -> None:
    known = sshd.known_hosts(f"{sshd.known_hosts_name} {other_key(tmp_path)}", types=("rsa",))
    assert "HOST KEY CHANGED" in refusal(sshd, known)


def test_an_unknown_host_is_refused_with_its_fingerprint(sshd: Sshd, tmp_path: Path) -> None:
    known = sshd.known_hosts(f"[127.0.0.1]:{free_port()} {sshd.host_keys['ed25519']}", types=())
    message = refusal(sshd, known)
    assert "host key not in known_hosts" in message
    assert re.search(r"it offered ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}", message)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known}" in message
    missing = refusal(sshd, tmp_path / "no_known_hosts")
    assert "(the file does not exist)" in missing


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa", "ed25519"])
def test_a_host_pinned_by_any_one_key_type_is_checked_against_that_key(
    sshd: Sshd, key_type: str
) -> None:
    """paramiko prefers ed25519: the negotiation is narrowed to the types known_hosts has."""

    async def negotiated(t: SshTransport) -> str | None:
        await t.run(["true"])
        return t.host_key_type

    kind = with_transport(sshd, negotiated, known_hosts=sshd.known_hosts(types=(key_type,)))
    assert kind is not None
    assert kind.startswith({"rsa": "rsa-sha2", "ecdsa": "ecdsa-sha2", "ed25519": "ssh-ed25519"}
                           [key_type])  # fmt: skip


def test_hashed_known_hosts_entries_are_understood(sshd: Sshd) -> None:
    known = sshd.known_hosts()
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "127.0.0.1" not in known.read_text()
    result = with_transport(sshd, lambda t: t.run(["echo", "ok"]), known_hosts=known)
    assert result.stdout == "ok\n"


def test_a_revoked_host_key_is_refused(sshd: Sshd) -> None:
    known = sshd.known_hosts(f"@revoked * {sshd.host_keys['ed25519']}")
    assert "@revoked" in refusal(sshd, known)


# --- connecting --------------------------------------------------------------------------


def test_a_refused_connection_is_one_line(sshd: Sshd) -> None:
    port = free_port()
    transport = SshTransport(Host(user="deploy", hostname="127.0.0.1", port=port), sshd.settings())

    async def main() -> None:
        try:
            await transport.run(["true"])
        finally:
            await transport.close()

    with pytest.raises(ConnectFailed) as caught:
        asyncio.run(main())
    assert str(caught.value) == (
        f"deploy@127.0.0.1:{port}: connection refused at 127.0.0.1:{port} "
        "(is sshd running on that port?)"
    )


def test_a_port_that_never_speaks_ssh_times_out_in_one_line(sshd: Sshd) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        host = Host(user="deploy", hostname="127.0.0.1", port=port)
        transport = SshTransport(host, sshd.settings(connect_timeout="1s"))

        async def main() -> None:
            try:
                await transport.run(["true"])
            finally:
                await transport.close()

        started = time.monotonic()
        with pytest.raises(ConnectFailed) as caught:
            asyncio.run(main())
    assert time.monotonic() - started < 10
    assert str(caught.value).startswith(
        f"deploy@127.0.0.1:{port}: no SSH banner from 127.0.0.1:{port} within 1s"
    )


def test_an_unresolvable_host_is_one_line(sshd: Sshd) -> None:
    host = Host(user="deploy", hostname="no-such-host.invalid")
    transport = SshTransport(host, sshd.settings())

    async def main() -> None:
        try:
            await transport.run(["true"])
        finally:
            await transport.close()

    with pytest.raises(ConnectFailed) as caught:
        asyncio.run(main())
    assert str(caught.value).startswith("deploy@no-such-host.invalid: cannot resolve no-such-host")


def test_a_key_the_host_does_not_accept_is_one_line(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger, "ed25519")
    with pytest.raises(ConnectFailed) as caught:
        with_transport(sshd, lambda t: t.run(["true"]), key_file=stranger)
    message = str(caught.value)
    assert f"authentication failed for user {sshd.user} with ssh.key_file {stranger}" in message
    assert "\n" not in message
    with pytest.raises(ConnectFailed, match="does not exist"):
        with_transport(sshd, lambda t: t.run(["true"]), key_file=tmp_path / "none")


def test_twenty_transports_at_once_all_connect(sshd: Sshd) -> None:
    """At most MAX_OPENING logins are in flight, so sshd's MaxStartups (default 10:30:100:
    past 10 unauthenticated connections it drops new ones at random) never drops one."""
    assert MAX_OPENING <= 5

    async def many() -> list[str]:
        transports = [SshTransport(sshd.host, sshd.settings()) for _ in range(20)]
        try:
            results = await asyncio.gather(*(t.run(["echo", str(i)])
                                             for i, t in enumerate(transports)))  # fmt: skip
            return [r.stdout for r in results]
        finally:
            await asyncio.gather(*(t.close() for t in transports))

    assert asyncio.run(many()) == [f"{i}\n" for i in range(20)]


@pytest.mark.serial
def test_a_long_remote_command_never_blocks_the_event_loop(sshd: Sshd) -> None:
    """A heartbeat on the loop keeps ticking while paramiko waits on the host."""

    async def main() -> tuple[int, float]:
        transport = SshTransport(sshd.host, sshd.settings())
        ticks, longest, stop = 0, 0.0, asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks, longest
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.02)
                now = time.monotonic()
                ticks, longest = ticks + 1, max(longest, now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        try:
            await transport.run(Shell("sleep 1.5; head -c 3000000 /dev/urandom | od"))
        finally:
            stop.set()
            await beat
            await transport.close()
        return ticks, longest

    ticks, longest = asyncio.run(main())
    assert ticks >= 20, f"the loop ticked only {ticks} times during the command"
    assert longest < 1.0, f"the loop stood still for {longest:.2f}s"


def test_ssh_work_does_not_need_asyncio_default_executor(sshd: Sshd) -> None:
    """With every default-executor thread busy (the store's lane), SSH commands still run."""

    async def main() -> str:
        release = threading.Event()
        loop = asyncio.get_running_loop()
        workers = loop._default_executor._max_workers if loop._default_executor else None  # type: ignore[attr-defined]
        count = workers or min(32, (os.cpu_count() or 1) + 4)
        blockers = [asyncio.to_thread(release.wait, 30) for _ in range(count)]
        busy = asyncio.gather(*blockers)
        try:
            transport = SshTransport(sshd.host, sshd.settings())
            try:
                async with asyncio.timeout(20):
                    return (await transport.run(["echo", "ran"])).stdout
            finally:
                await transport.close()
        finally:
            release.set()
            await busy

    assert asyncio.run(main()) == "ran\n"


# --- upload ------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_is_verified_on_the_host_then_skipped_when_already_there(
    sshd: Sshd, tmp_path: Path
) -> None:
    source = tmp_path / "eventmesh-1.0.tar.gz"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    source.chmod(0o750)
    destination = tmp_path / "host" / "releases dir" / "eventmesh-1.0.tar.gz"

    async def uploads(t: SshTransport) -> tuple:  # type: ignore[type-arg]
        first = await t.upload(source, str(destination))
        second = await t.upload(source, str(destination))
        source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # same size, other bytes
        third = await t.upload(source, str(destination))
        return first, second, third

    first, second, third = with_transport(sshd, uploads)
    assert not first.skipped and first.size == 3 * 1024 * 1024 + 5
    assert second.skipped and second.sha256 == first.sha256
    assert not third.skipped and third.sha256 == sha256(source) != first.sha256
    assert sha256(destination) == third.sha256
    assert destination.stat().st_mode & 0o777 == 0o750
    assert os.listdir(destination.parent) == [destination.name], "a temporary file was left"


def test_an_upload_with_a_known_sha256_is_checked_against_it_on_the_host(
    sshd: Sshd, tmp_path: Path
) -> None:
    source = tmp_path / "eventmesh-2.0.tar.gz"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    approved = sha256(source)
    destination = tmp_path / "host" / "eventmesh-2.0.tar.gz"

    async def uploads(t: SshTransport) -> tuple:  # type: ignore[type-arg]
        first = await t.upload(source, str(destination), sha256=approved)
        again = await t.upload(source, str(destination), sha256=approved)
        source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))  # changed after it was approved
        destination.unlink()
        with pytest.raises(TransportError) as caught:
            await t.upload(source, str(destination), sha256=approved)
        return first, again, str(caught.value)

    first, again, refused = with_transport(sshd, uploads)
    assert not first.skipped and first.sha256 == approved
    assert again.skipped and again.sha256 == approved
    assert f"expected sha256 {approved}" in refused and "it changed" in refused
    assert "nothing was replaced" in refused and "\n" not in refused
    assert not destination.exists()
    assert os.listdir(destination.parent) == [], "a temporary file was left"


@pytest.mark.parametrize("writer", ["GNU dd", "head -c"])
def test_the_receiver_takes_exactly_the_file_and_then_the_verdict(
    writer: str, tmp_path: Path
) -> None:
    """The host's script, run by a shell here: the bytes after the file are the verdict, not
    part of it, with GNU dd and with `head -c` (a host without GNU dd: BusyBox, BSD)."""
    env = dict(os.environ)
    if writer == "head -c":
        shims = tmp_path / "bin"
        shims.mkdir()
        (shims / "dd").write_text("#!/bin/sh\nexit 1\n")  # no --version: not GNU dd
        (shims / "dd").chmod(0o755)
        env["PATH"] = f"{shims}:{env['PATH']}"
    payload = os.urandom(3 * 1024 * 1024 + 11)
    destination = tmp_path / "host" / "eventmesh.tar.gz"
    script = receiver_script(str(destination), len(payload), 0o640)
    done = subprocess.run(
        ["sh", "-c", script],
        input=payload + b"commit\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    digest = hashlib.sha256(payload).hexdigest()
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["have -", f"got {digest} {len(payload)}"]
    assert destination.read_bytes() == payload
    assert destination.stat().st_mode & 0o777 == 0o640
    assert os.listdir(destination.parent) == [destination.name]


def test_an_upload_that_cannot_be_written_fails_in_one_line_and_replaces_nothing(
    sshd: Sshd, tmp_path: Path
) -> None:
    source = tmp_path / "artifact"
    source.write_bytes(b"payload")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(TransportError) as caught:
        with_transport(sshd, lambda t: t.upload(source, str(blocker / "artifact")))
    message = str(caught.value)
    assert message.startswith(f"{sshd.user}@127.0.0.1:{sshd.port}: cannot prepare ")
    assert "\n" not in message
    assert blocker.read_text() == "not a directory"


def test_a_cancelled_upload_leaves_no_temporary_file_on_the_host(
    sshd: Sshd, tmp_path: Path
) -> None:
    source = tmp_path / "big.tar.gz"
    with source.open("wb") as file:
        for _ in range(64):
            file.write(os.urandom(1024 * 1024))
    host_dir = tmp_path / "host"

    async def cancel_midway(t: SshTransport) -> None:
        task = asyncio.create_task(t.upload(source, str(host_dir / "big.tar.gz")))
        while not (host_dir.exists() and any(host_dir.iterdir())):
            await asyncio.sleep(0.005)  # until the temporary file exists on the host
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with_transport(sshd, cancel_midway)
    deadline = time.monotonic() + 20
    while os.listdir(host_dir) and time.monotonic() < deadline:
        time.sleep(0.05)  # the committer sees its stdin close and removes the file
    assert os.listdir(host_dir) == []


# --- the factory -------------------------------------------------------------------------


def test_open_transports_gives_one_ssh_transport_per_host_and_closes_them(sshd: Sshd) -> None:
    env = Environment(
        name="staging",
        base_url="http://127.0.0.1:1",
        hosts=[str(sshd.host), f"{sshd.user}@localhost:{sshd.port}"],
    )

    async def main() -> tuple[list[str], list[str]]:
        async with open_transports(env, sshd.settings()) as hosts:
            targets = [h.target for h in hosts]
            assert all(isinstance(h, SshTransport) for h in hosts)
            first = await hosts[0].run(["echo", "one"])
            with pytest.raises(HostKeyRejected):  # localhost is not in known_hosts
                await hosts[1].run(["echo", "two"])
        with pytest.raises(TransportError, match="closed"):
            await hosts[0].run(["echo", "again"])
        return targets, [first.stdout]

    targets, outputs = asyncio.run(main())
    assert targets == [str(sshd.host), f"{sshd.user}@localhost:{sshd.port}"]
    assert outputs == ["one\n"]
