"""A real OpenSSH sshd on a loopback port, for the SSH transport and what stands on it.

Throwaway host keys of three types (ed25519, rsa, ecdsa: the transport must check whichever
type it negotiates), a throwaway client key, and a config that needs nothing from the
machine but the sshd binary. The "host" is this machine, logged into as the current user
(root in CI, with PermitRootLogin prohibit-password), so a test can also look at the host
directly: `run_on_host` goes through the OpenSSH client, independently of the code under test.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Host, SshSettings

HOSTNAME = "127.0.0.1"
KEY_TYPES = ("ed25519", "rsa", "ecdsa")
STARTUP_TIMEOUT_S = 15.0


def sshd_binary() -> str | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if os.access(found, os.X_OK) else None


def missing_reason() -> str | None:
    """Why the SSH tests cannot run here, or None when they can."""
    if sshd_binary() is None:
        return "OpenSSH sshd is not installed (Debian: apt-get install openssh-server)"
    for tool in ("ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOSTNAME, 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, key_type: str) -> str:
    """A new key pair at path / path.pub; returns the public line ('ssh-ed25519 AAAA...')."""
    bits = {"rsa": ["-b", "2048"], "ecdsa": ["-b", "256"]}.get(key_type, [])
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, *bits, "-N", "", "-C", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@dataclass
class Sshd:
    directory: Path
    port: int
    user: str
    process: subprocess.Popen[bytes]
    log: Path
    client_key: Path
    host_keys: dict[str, str]  # key type -> public line, e.g. "ssh-ed25519 AAAA..."
    _known_hosts_count: int = field(default=0, repr=False)

    @property
    def host(self) -> Host:
        return Host(user=self.user, hostname=HOSTNAME, port=self.port)

    @property
    def known_hosts_name(self) -> str:
        return f"[{HOSTNAME}]:{self.port}"

    def known_hosts(self, *lines: str, types: tuple[str, ...] = KEY_TYPES) -> Path:
        """A new known_hosts file: the host's keys of `types`, then any extra `lines`."""
        self._known_hosts_count += 1
        path = self.directory / f"known_hosts.{self._known_hosts_count}"
        entries = [f"{self.known_hosts_name} {self.host_keys[t]}" for t in types]
        path.write_text("".join(f"{line}\n" for line in (*entries, *lines)))
        return path

    def settings(self, known_hosts: Path | None = None, **overrides: object) -> SshSettings:
        """SshSettings for this host: its client key, a known_hosts pinning every host key."""
        fields: dict[str, object] = {
            "key_file": self.client_key,
            "known_hosts": known_hosts or self.known_hosts(),
            "connect_timeout": "5s",
            "command_timeout": "60s",
        }
        fields.update(overrides)
        return SshSettings.model_validate(fields)

    def openssh_options(self) -> list[str]:
        """Options for the OpenSSH client (ssh, scp) to reach this host with its own checks."""
        return [
            "-F", "/dev/null",
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.directory / 'known_hosts.all'}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def run_on_host(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on the host with OpenSSH's own client (not the code under test)."""
        return subprocess.run(
            ["ssh", *self.openssh_options(), "-p", str(self.port), f"{self.user}@{HOSTNAME}",
             command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sshd(
    directory: Path, *, client_key: Path | None = None, extra_config: Sequence[str] = ()
) -> Sshd:
    """sshd -D on a free loopback port, configured entirely from files in `directory`.

    `client_key` lets in the same client as another sshd (several "hosts" for one key_file);
    `extra_config` adds sshd_config lines (a ForceCommand that gives each its own directory).
    """
    binary = sshd_binary()
    assert binary is not None, missing_reason()
    directory.mkdir(parents=True, exist_ok=True)
    host_keys = {t: keygen(directory / f"ssh_host_{t}_key", t) for t in KEY_TYPES}
    authorized = directory / "authorized_keys"
    if client_key is None:
        client_key = directory / "client_ed25519"
        authorized.write_text(keygen(client_key, "ed25519") + "\n")
    else:
        public = client_key.with_suffix(".pub").read_text().split()[:2]
        authorized.write_text(" ".join(public) + "\n")
    (directory / "known_hosts.all").write_text(
        "".join(f"[{HOSTNAME}]:{{port}} {line}\n" for line in host_keys.values())
    )
    port = free_port()
    known_all = directory / "known_hosts.all"
    known_all.write_text(known_all.read_text().replace("{port}", str(port)))
    log = directory / "sshd.log"
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {HOSTNAME}",
                *(f"HostKey {directory / f'ssh_host_{t}_key'}" for t in KEY_TYPES),
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {directory / 'sshd.pid'}",
                "StrictModes no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "UseDNS no",
                "PrintMotd no",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                *extra_config,
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        # Privilege separation needs its empty directory when sshd runs as root.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Sshd(
        directory=directory,
        port=port,
        user=getpass.getuser(),
        process=process,
        log=log,
        client_key=client_key,
        host_keys=host_keys,
    )
    try:
        _wait_for_banner(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_banner(server: Sshd) -> None:
    """Until sshd answers with its SSH banner (readiness: a condition, not a fixed time)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"sshd exited with {server.process.returncode}:\n{server.log_text()}"
            )
        try:
            with socket.create_connection((HOSTNAME, server.port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"sshd gave no banner in {STARTUP_TIMEOUT_S}s:\n{server.log_text()}")
