"""Upload of a deploy artifact to a host: the SSH transport against OpenSSH's scp, one run.

A real OpenSSH sshd on loopback (tests/support/sshd.py), one file of random bytes, and
these ways of putting it on the "host", interleaved round by round so background noise hits
them all alike:

- transport: `SshTransport.upload` as /deploy uses it: connect, stream into a temporary
  name with the sha256 computed on the host as the bytes arrive, compare, rename into place.
  AES-GCM is moved first in paramiko's cipher list (the default).
- transport, paramiko's cipher order: the same with paramiko's own order, which negotiates
  aes128-ctr + hmac-sha2-256 (paramiko lists AES-GCM last). The lever, shown on its own.
- scp: OpenSSH's scp of the same file (a new connection each time, as the transport makes).
- transport, already there: the same file again at the same place: hashed on both ends,
  nothing sent.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from bot.transport.ssh import SshTransport, gcm_first
from tests.support.sshd import Sshd, missing_reason, start_sshd


@dataclass
class Way:
    name: str
    upload: Callable[[Path, str], str | None]  # returns the cipher used, when known
    keep_destination: bool = False
    seconds: list[float] = field(default_factory=list)
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


def scp_upload(server: Sshd):  # type: ignore[no-untyped-def]
    def upload(source: Path, destination: str) -> str | None:
        subprocess.run(
            ["scp", "-q", *server.openssh_options(), "-P", str(server.port), str(source),
             f"{server.user}@127.0.0.1:{destination}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return None

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
    expected = sha256(source)
    size = source.stat().st_size
    host_dir = work / "host"
    ways = [
        Way("transport (AES-GCM first, the default)", transport_upload(server, gcm_first)),
        Way("transport, paramiko's cipher order", transport_upload(server, tuple)),
        Way("OpenSSH scp", scp_upload(server)),
        Way("transport, file already there (skipped)", transport_upload(server, gcm_first),
            keep_destination=True),
    ]  # fmt: skip
    load_before = os.getloadavg()
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for way in ways:
            destination = host_dir / "releases" / source.name
            destination.parent.mkdir(parents=True, exist_ok=True)  # scp needs it
            if not way.keep_destination:
                destination.unlink(missing_ok=True)
            elif not destination.exists() or sha256(destination) != expected:
                shutil.copyfile(source, destination)
            t0 = time.perf_counter()
            cipher = way.upload(source, str(destination))
            seconds = time.perf_counter() - t0
            assert sha256(destination) == expected, f"{way.name}: the host's copy is wrong"
            way.seconds.append(seconds)
            if cipher:
                way.ciphers.add(cipher)
            print(f"round {round_number} {way.name}: {seconds:.3f}s "
                  f"({size / 1e6 / seconds:.0f} MB/s)", file=sys.stderr)  # fmt: skip
    total = time.monotonic() - started
    scp = next(w for w in ways if w.name == "OpenSSH scp")
    scp.ciphers.add(f"{openssh_default_cipher(server)} (OpenSSH's default)")
    print(
        f"{size_mb} MB (random bytes) to a loopback OpenSSH sshd, best of {rounds} interleaved "
        f"rounds per way, connection set-up included\n"
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; Python {platform.python_version()}, "
        f"paramiko {paramiko.__version__}, {openssh_version()}; {total:.0f} s total\n"
    )
    print("| way | cipher | best | MB/s (best) | median | × scp (best) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for way in ways:
        print(
            f"| {way.name} | {', '.join(sorted(way.ciphers)) or '-'} | {way.best:.2f} s | "
            f"{size / 1e6 / way.best:.0f} | {statistics.median(way.seconds):.2f} s | "
            f"{scp.best / way.best:.2f} |"
        )
    return 0


def openssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    return out.split(",")[0].strip()


if __name__ == "__main__":
    sys.exit(main())
