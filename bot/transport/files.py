"""File helpers both transports' uploads use (blocking: call them off the event loop)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temp_name(destination: str) -> str:
    """A hidden name beside `destination`: same directory, so the final rename is atomic."""
    path = PurePosixPath(destination)
    return str(path.with_name(f".{path.name}.upload-{secrets.token_hex(6)}"))
