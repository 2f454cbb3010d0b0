"""Upload of a deploy artifact to a host: the SSH transport against OpenSSH's scp, one run.

A real OpenSSH sshd on loopback (tests/support/sshd.py), one file of random bytes, and
these ways of putting it on the "host", interleaved round by round so background noise hits
them all alike:

- transport: `SshTransport.upload` as /deploy uses it: connect, stream into a temporary
  name with the sha256 computed on both ends as the bytes go (client: each chunk as it is
  read; host: `tee` into the hasher), compare, rename into place.
  AES-GCM is moved first in paramiko's cipher list (the default).
- transport, paramiko's cipher order: the same with paramiko's own order, which negotiates
  aes128-ctr + hmac-sha2-256 (paramiko lists AES-GCM last). The lever, shown on its own.
- scp -c aes128-gcm@openssh.com: OpenSSH's scp of the same file on the cipher the transport
  negotiates (a new connection each time, as the transport makes). **The anchor**: the ratio
  column is against this one. scp with OpenSSH's defaults (chacha20-poly1305) is shown too.
- transport, already there: the same file again at the same place: hashed on both ends,
  nothing sent.
- bare transfer, AES-GCM first / paramiko's cipher order: the bytes alone, into
  `cat > /dev/null` over one exec channel of a connection opened beforehand: no file, no
  hashing, no set-up. This isolates the cipher lever that the full uploads dilute.

Each way starts from no file at the destination (except "already there") and includes its
connection set-up. Best of N rounds per way, MB/s = 10^6 bytes per second.

    .venv/bin/python -m benchmarks.upload --size-mb 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Sequence
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


def stream_only(transport: SshTransport, payload: bytes):  # type: ignore[no-untyped-def]
    """The bare transfer: the bytes into `cat > /dev/null` over one exec channel of an open
    connection (no file, no hashing, no connection set-up): what the cipher alone decides."""

    def upload(source: Path, destination: str) -> str | None:
        result = asyncio.run(transport.run(Shell("cat > /dev/null"), stdin=payload))
        assert result.ok, result
        return transport.cipher

    return upload


SCP_GCM = "OpenSSH scp -c aes128-gcm@openssh.com (the anchor)"


def scp_upload(server: Sshd, cipher: str | None = None):  # type: ignore[no-untyped-def]
    choice = ["-c", cipher] if cipher else []

    def upload(source: Path, destination: str) -> str | None:
        subprocess.run(
            ["scp", "-q", *server.openssh_options(), *choice, "-P", str(server.port),
             str(source), f"{server.user}@127.0.0.1:{destination}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return cipher

    return upload


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


def client_cpu() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children (scp, ssh)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def host_cpu(server: Sshd, kept: int) -> float:
    """CPU seconds of the sshd's finished sessions (each connection's processes, reaped);
    `kept`: the sessions of the connections kept open for the bare transfers."""
    sshd = psutil.Process(server.process.pid)
    deadline = time.monotonic() + 5
    while len(sshd.children()) > kept and time.monotonic() < deadline:
        time.sleep(0.01)  # a session that just closed: until sshd has reaped it
    times = sshd.cpu_times()
    return times.children_user + times.children_system


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
    payload = source.read_bytes()
    # Connected before the clock starts: the bare transfers measure the bytes alone.
    gcm = SshTransport(server.host, server.settings(), ciphers=gcm_first)
    ctr = SshTransport(server.host, server.settings(), ciphers=tuple)
    for transport in (gcm, ctr):
        asyncio.run(transport.run(["true"]))
    ways = [
        Way("transport (AES-GCM first, the default)", transport_upload(server, gcm_first)),
        Way("transport, paramiko's cipher order", transport_upload(server, tuple)),
        Way(SCP_GCM, scp_upload(server, "aes128-gcm@openssh.com")),
        Way("OpenSSH scp, its default cipher", scp_upload(server)),
        Way("transport, file already there (skipped)", transport_upload(server, gcm_first),
            destination="present"),
        Way("bare transfer, AES-GCM first", stream_only(gcm, payload), destination="none"),
        Way("bare transfer, paramiko's cipher order", stream_only(ctr, payload),
            destination="none"),
    ]  # fmt: skip
    try:
        return measure(server, source, ways, rounds)
    finally:
        for transport in (gcm, ctr):
            asyncio.run(transport.close())


def measure(server: Sshd, source: Path, ways: list[Way], rounds: int) -> int:
    expected, size = sha256(source), source.stat().st_size
    destination = source.parent / "host" / "releases" / source.name
    destination.parent.mkdir(parents=True)  # scp needs it; the transport would make it
    load_before = os.getloadavg()
    kept = len(psutil.Process(server.process.pid).children())  # the bare transfers' connections
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for way in ways:
            if way.destination == "absent":
                destination.unlink(missing_ok=True)
            elif way.destination == "present" and not destination.exists():
                shutil.copyfile(source, destination)
            host0, client0 = host_cpu(server, kept), client_cpu()
            t0 = time.perf_counter()
            cipher = way.upload(source, str(destination))
            seconds = time.perf_counter() - t0
            way.client_cpu.append(client_cpu() - client0)
            if way.destination != "none":  # a bare transfer's connection stays open
                way.host_cpu.append(host_cpu(server, kept) - host0)
            if way.destination != "none":
                assert sha256(destination) == expected, f"{way.name}: the host's copy is wrong"
            way.seconds.append(seconds)
            if cipher:
                way.ciphers.add(cipher)
            print(f"round {round_number} {way.name}: {seconds:.3f}s "
                  f"({size / 1e6 / seconds:.0f} MB/s)", file=sys.stderr)  # fmt: skip
    total = time.monotonic() - started
    scp = next(w for w in ways if w.name == SCP_GCM)
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
        "| way | cipher | best | MB/s (best) | median | × scp AES-GCM (best) | (median) "
        "| CPU s, client + host (median) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for way in ways:
        median = statistics.median(way.seconds)
        cpu = f"{statistics.median(way.client_cpu):.2f}"
        cpu += f" + {statistics.median(way.host_cpu):.2f}" if way.host_cpu else " + (kept open)"
        print(
            f"| {way.name} | {', '.join(sorted(way.ciphers)) or '-'} | {way.best:.2f} s | "
            f"{size / 1e6 / way.best:.0f} | {median:.2f} s | {scp.best / way.best:.2f} | "
            f"{statistics.median(scp.seconds) / median:.2f} | {cpu} |"
        )
    return 0


def openssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    return out.split(",")[0].strip()


if __name__ == "__main__":
    sys.exit(main())
