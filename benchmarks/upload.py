"""Upload of a deploy artifact to a host: the SSH transport against OpenSSH's scp, one run.

A real OpenSSH sshd on loopback (tests/support/sshd.py), one file of random bytes, and
these ways of putting it on the "host", interleaved round by round so background noise hits
them all alike:

- transport as /deploy uses it: `SshTransport.upload(..., sha256=<the package's>)` on the
  connection the deploy opened at its `hosts` step (opened here before the clock starts):
  ask the host what the destination holds, stream the bytes over one exec channel into `dd`
  (a temporary name), the host hashes the written file (OpenSSL) and compares with the
  package's sha256, then renames into place. AES-GCM is moved first in paramiko's cipher list.
- transport, new connection, sha256 computed: the same from a cold start (connect, key
  exchange, authentication) with the client hashing each chunk as it reads it.
- transport as /deploy, paramiko's cipher order: aes128-ctr + hmac-sha2-256 (paramiko lists
  AES-GCM last). The cipher lever, shown on its own.
- scp -c aes128-gcm@openssh.com: OpenSSH's scp of the same file on the cipher the transport
  negotiates, a new connection each time. **The anchor** the ratio column is against.
- scp -c aes128-gcm@openssh.com over an open connection (ControlMaster): the anchor without
  its connection set-up, for the ways on an open connection (the "× scp, connection open"
  column). scp with OpenSSH's defaults (chacha20-poly1305) is shown too.
- transport, already there: the same file again at the same place: the host hashes its copy,
  nothing is sent.
- a command's start on the host: `ssh host true` over the open master connection, no upload:
  the host's login shell (and its rc files) starting, which every exec channel pays once and
  scp (the SFTP subsystem) does not.
- bare transfer, AES-GCM first / paramiko's cipher order: the bytes alone, into
  `cat > /dev/null` over one exec channel of an open connection: no file, no hashing. What the
  cipher and paramiko's packet path alone allow.

Each way starts from no file at the destination (except "already there"). Best of N rounds
per way, MB/s = 10^6 bytes per second. CPU seconds are the client's (this process, its
children, the ControlMaster) and the host's (every process under the sshd).

    .venv/bin/python -m benchmarks.upload --size-mb 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import paramiko
import psutil

from bot.transport import Shell
from bot.transport.ssh import SshTransport, gcm_first
from tests.support.sshd import Sshd, missing_reason, start_sshd


@dataclass
class Way:
    name: str
    upload: Callable[[Path, str], str | None]  # returns the cipher used, when known
    # before each round the destination is made absent, left present (the skip case), or is
    # not a file at all (the bare transfers)
    destination: Literal["absent", "present", "none"] = "absent"
    connection: Literal["new", "open"] = "new"
    moves_bytes: bool = True  # False: a fixed cost shown beside the uploads, not an upload
    seconds: list[float] = field(default_factory=list)
    # CPU seconds: this process and its children (the client: transport threads, scp and ssh),
    # and the host's sessions (sshd's children, once reaped: not for the kept connections)
    client_cpu: list[float] = field(default_factory=list)
    host_cpu: list[float] = field(default_factory=list)
    ciphers: set[str] = field(default_factory=set)

    @property
    def best(self) -> float:
        return min(self.seconds)


def transport_upload(server: Sshd, ciphers: Callable[[Sequence[str]], Sequence[str]]):  # type: ignore[no-untyped-def]
    """A cold start: a new transport (connect, authenticate), the client hashes as it reads."""

    def upload(source: Path, destination: str) -> str | None:
        async def once() -> str | None:
            transport = SshTransport(server.host, server.settings(), ciphers=ciphers)
            try:
                result = await transport.upload(source, destination)
                assert result.size == source.stat().st_size
                return transport.cipher
            finally:
                await transport.close()

        return asyncio.run(once())

    return upload


def deploy_upload(transport: SshTransport, known: str):  # type: ignore[no-untyped-def]
    """As /deploy: on the connection its `hosts` step opened, with the package's sha256."""

    def upload(source: Path, destination: str) -> str | None:
        result = asyncio.run(transport.upload(source, destination, sha256=known))
        assert result.sha256 == known
        return transport.cipher

    return upload


def stream_only(transport: SshTransport, payload: bytes):  # type: ignore[no-untyped-def]
    """The bare transfer: the bytes into `cat > /dev/null` over one exec channel of an open
    connection (no file, no hashing, no connection set-up): what the cipher alone decides."""

    def upload(source: Path, destination: str) -> str | None:
        result = asyncio.run(transport.run(Shell("cat > /dev/null"), stdin=payload))
        assert result.ok, result
        return transport.cipher

    return upload


SCP_GCM = "OpenSSH scp -c aes128-gcm@openssh.com (the anchor)"
SCP_OPEN = "OpenSSH scp -c aes128-gcm@openssh.com, connection open (ControlMaster)"
DEPLOY = "transport as /deploy uses it (connection open, sha256 known)"
SHELL_START = "a command's start on the host: `ssh host true`, connection open (no upload)"


def scp_upload(server: Sshd, cipher: str | None = None, *master: str):  # type: ignore[no-untyped-def]
    choice = ["-c", cipher] if cipher else []

    def upload(source: Path, destination: str) -> str | None:
        subprocess.run(
            ["scp", "-q", *server.openssh_options(), *master, *choice, "-P", str(server.port),
             str(source), f"{server.user}@127.0.0.1:{destination}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return cipher

    return upload


def shell_start(server: Sshd, *master: str):  # type: ignore[no-untyped-def]
    """`ssh host true` over the open master connection: what starting a command costs on the
    host (its login shell and rc files), which any exec channel pays and scp's SFTP does not."""

    def run(source: Path, destination: str) -> str | None:
        subprocess.run(
            ["ssh", *server.openssh_options(), *master, "-p", str(server.port),
             f"{server.user}@127.0.0.1", "true"],
            check=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return None

    return run


@contextlib.contextmanager
def control_master(server: Sshd, work: Path, cipher: str) -> Iterator[tuple[list[str], int]]:
    """An OpenSSH master connection: scp's options to use it, and the master's pid."""
    socket_path = work / "master.sock"
    master = subprocess.Popen(
        ["ssh", *server.openssh_options(), "-c", cipher, "-M", "-S", str(socket_path), "-N",
         "-p", str(server.port), f"{server.user}@127.0.0.1"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    check = ["ssh", "-S", str(socket_path), "-O", "check", "-p", str(server.port), "127.0.0.1"]
    deadline = time.monotonic() + 20
    while subprocess.run(check, capture_output=True).returncode != 0:
        if master.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the OpenSSH master connection did not come up")
        time.sleep(0.05)  # polling a process we started: nothing to wait on instead
    try:
        yield ["-o", f"ControlPath={socket_path}", "-o", "ControlMaster=no"], master.pid
    finally:
        master.terminate()
        master.wait(10)


def openssh_default_cipher(server: Sshd) -> str:
    """What OpenSSH's client prefers (and this sshd accepts): the first of `ssh -G`'s list."""
    out = subprocess.run(
        ["ssh", "-G", *server.openssh_options(), "-p", str(server.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("ciphers "):
            return line.split()[1].split(",")[0]
    return "?"


def client_cpu(master_pid: int) -> float:
    """CPU seconds of this process (all threads), its waited-for children (scp, ssh) and the
    OpenSSH master connection (a child still running)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    master = psutil.Process(master_pid).cpu_times()
    return (
        own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        + master.user + master.system
    )  # fmt: skip


def host_cpu(server: Sshd, settled: int) -> float:
    """CPU seconds of every process under the sshd, running or finished: its sessions, their
    shells and what those ran. `settled`: how many processes are under it between uploads (the
    open connections' sessions); the work of one upload is counted once they are back to that."""
    sshd = psutil.Process(server.process.pid)
    deadline = time.monotonic() + 5
    while len(sshd.children(recursive=True)) > settled and time.monotonic() < deadline:
        time.sleep(0.01)  # a shell or session that just ended: until it has been reaped
    return _cpu_below(sshd)


def _cpu_below(process: psutil.Process) -> float:
    """CPU of a process's finished descendants and of its running ones (and theirs)."""
    try:
        times = process.cpu_times()
        total = times.children_user + times.children_system
        for child in process.children():
            child_times = child.cpu_times()
            total += child_times.user + child_times.system + _cpu_below(child)
    except psutil.NoSuchProcess:
        return 0.0  # ended between the two reads: counted by its parent once reaped
    return total


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per way, interleaved")
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    server = start_sshd(work / "sshd")
    try:
        return run(server, work, args.size_mb, args.rounds)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(server: Sshd, work: Path, size_mb: int, rounds: int) -> int:
    source = work / "eventmesh-1.2.3.tar.gz"
    with source.open("wb") as file:
        for _ in range(size_mb):
            file.write(os.urandom(1_000_000))
    payload, known = source.read_bytes(), sha256(source)
    # Connected before the clock starts, as a deploy's `hosts` step connects before its upload.
    gcm = SshTransport(server.host, server.settings(), ciphers=gcm_first)
    ctr = SshTransport(server.host, server.settings(), ciphers=tuple)
    for transport in (gcm, ctr):
        asyncio.run(transport.run(["true"]))
    try:
        with control_master(server, work, "aes128-gcm@openssh.com") as (master, master_pid):
            ways = [
                Way(DEPLOY, deploy_upload(gcm, known), connection="open"),
                Way("transport, new connection, sha256 computed",
                    transport_upload(server, gcm_first)),
                Way("transport as /deploy, paramiko's cipher order", deploy_upload(ctr, known),
                    connection="open"),
                Way(SCP_GCM, scp_upload(server, "aes128-gcm@openssh.com")),
                Way(SCP_OPEN, scp_upload(server, None, *master), connection="open"),
                Way("OpenSSH scp, its default cipher", scp_upload(server)),
                Way("transport as /deploy, file already there (skipped)",
                    deploy_upload(gcm, known), destination="present", connection="open"),
                Way(SHELL_START, shell_start(server, *master), destination="none",
                    connection="open", moves_bytes=False),
                Way("bare transfer, AES-GCM first", stream_only(gcm, payload),
                    destination="none", connection="open"),
                Way("bare transfer, paramiko's cipher order", stream_only(ctr, payload),
                    destination="none", connection="open"),
            ]  # fmt: skip
            return measure(server, source, ways, rounds, master_pid)
    finally:
        for transport in (gcm, ctr):
            asyncio.run(transport.close())


def measure(server: Sshd, source: Path, ways: list[Way], rounds: int, master_pid: int) -> int:
    expected, size = sha256(source), source.stat().st_size
    destination = source.parent / "host" / "releases" / source.name
    destination.parent.mkdir(parents=True)  # scp needs it; the transport would make it
    load_before = os.getloadavg()
    settled = len(psutil.Process(server.process.pid).children(recursive=True))
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for way in ways:
            if way.destination == "absent":
                destination.unlink(missing_ok=True)
            elif way.destination == "present" and not destination.exists():
                shutil.copyfile(source, destination)
            host0, client0 = host_cpu(server, settled), client_cpu(master_pid)
            t0 = time.perf_counter()
            cipher = way.upload(source, str(destination))
            seconds = time.perf_counter() - t0
            way.client_cpu.append(client_cpu(master_pid) - client0)
            way.host_cpu.append(host_cpu(server, settled) - host0)
            if way.destination != "none":
                assert sha256(destination) == expected, f"{way.name}: the host's copy is wrong"
            way.seconds.append(seconds)
            if cipher:
                way.ciphers.add(cipher)
            print(f"round {round_number} {way.name}: {seconds:.3f}s "
                  f"({size / 1e6 / seconds:.0f} MB/s)", file=sys.stderr)  # fmt: skip
    total = time.monotonic() - started
    scp = next(w for w in ways if w.name == SCP_GCM)
    scp_open = next(w for w in ways if w.name == SCP_OPEN)
    scp_open.ciphers.add("aes128-gcm@openssh.com")
    default = next(w for w in ways if w.name == "OpenSSH scp, its default cipher")
    default.ciphers.add(f"{openssh_default_cipher(server)} (OpenSSH's default)")
    print(
        f"{size // 1_000_000} MB (random bytes) to a loopback OpenSSH sshd, best of {rounds} "
        f"interleaved rounds per way\n"
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; Python {platform.python_version()}, "
        f"paramiko {paramiko.__version__}, {openssh_version()}; {total:.0f} s total\n"
    )
    print(
        "| way | connection | cipher | best | MB/s (best) | median | × scp AES-GCM (best) "
        "| (median) | × scp, connection open (best) | CPU s, client + host (median) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for way in ways:
        median = statistics.median(way.seconds)
        cpu = f"{statistics.median(way.client_cpu):.2f} + {statistics.median(way.host_cpu):.2f}"
        if way.moves_bytes:
            rates = (
                f"{size / 1e6 / way.best:.0f} | {median:.2f} s | {scp.best / way.best:.2f} | "
                f"{statistics.median(scp.seconds) / median:.2f} | {scp_open.best / way.best:.2f}"
            )
        else:
            rates = f"- | {median:.2f} s | - | - | -"
        print(
            f"| {way.name} | {way.connection} | {', '.join(sorted(way.ciphers)) or '-'} | "
            f"{way.best:.2f} s | {rates} | {cpu} |"
        )
    return 0


def openssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    return out.split(",")[0].strip()


if __name__ == "__main__":
    sys.exit(main())
