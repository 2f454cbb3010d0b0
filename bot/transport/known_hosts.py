"""Pinned host keys: what `ssh.known_hosts` says about one host, read the way OpenSSH reads it.

paramiko's own HostKeys keeps one key per type and host, and silently drops `@revoked` and
`@cert-authority` lines; this reader keeps every key listed for the host, honours `@revoked`
(a revoked key is refused whatever host offers it), and skips `@cert-authority` lines
(host certificates are not supported: such a host needs its plain key pinned).
Hostname patterns: plain names, `[host]:port`, hashed entries (`|1|salt|hash`), `*` and `?`
wildcards and `!negation`, as in OpenSSH.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeys

# What paramiko's negotiation calls the algorithms that a known_hosts key type covers.
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def entry_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: 'host' on port 22, '[host]:port' elsewhere."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


@dataclass(frozen=True)
class PinnedKeys:
    path: Path
    name: str  # the entry name looked up, e.g. "[10.0.0.5]:2222"
    keys: tuple[paramiko.PKey, ...]
    revoked: tuple[paramiko.PKey, ...]
    file_exists: bool

    def key_types(self) -> set[str]:
        """Key type names as known_hosts writes them ('ssh-ed25519', 'ssh-rsa', ...)."""
        return {key.get_name() for key in self.keys}

    def algorithms(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """Of `offered` (paramiko's preference order), those this host's pinned keys cover.

        Negotiating only these is what makes the check complete: left to itself paramiko
        picks its favourite type (ed25519), and a host pinned only by its RSA key would look
        unknown; or worse, a client that accepted any type could be shown a key nobody pinned.
        """
        types = self.key_types()
        return tuple(
            algorithm
            for algorithm in offered
            if algorithm in types or (algorithm in _RSA_ALGORITHMS and "ssh-rsa" in types)
        )

    def accepts(self, key: paramiko.PKey) -> bool:
        blob = key.asbytes()
        if any(blob == revoked.asbytes() for revoked in self.revoked):
            return False
        return any(blob == pinned.asbytes() for pinned in self.keys)

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return any(key.asbytes() == revoked.asbytes() for revoked in self.revoked)


def pinned_keys(path: Path, hostname: str, port: int) -> PinnedKeys:
    """Every key known_hosts pins for hostname:port (OSError if the file cannot be read)."""
    name = entry_name(hostname, port)
    keys: list[paramiko.PKey] = []
    revoked: list[paramiko.PKey] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return PinnedKeys(path, name, (), (), file_exists=False)
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if len(fields) < 3 or marker == "@cert-authority":
            continue
        patterns, key_type, encoded = fields[:3]
        key = _parse_key(key_type, encoded)
        if key is None:
            continue
        if marker == "@revoked":
            revoked.append(key)  # refused for every host, as OpenSSH does
        elif marker is None and _matches(patterns, name):
            keys.append(key)
    return PinnedKeys(path, name, tuple(keys), tuple(revoked), file_exists=True)


def _parse_key(key_type: str, encoded: str) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError, paramiko.SSHException):
        return None  # a key type paramiko does not know (sk-*, certificates) or a broken line


def _matches(patterns: str, name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated pattern does."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if pattern.startswith("|1|"):
            hit = HostKeys.hash_host(name, pattern) == pattern
        else:
            hit = _wildcard(pattern).fullmatch(name.lower()) is not None
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    # Only * and ? are special; '[' and ']' are literal ('[host]:port').
    return re.compile(re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", "."))
