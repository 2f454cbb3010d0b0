"""The deploy's package: the `artifacts` globs, as `eventmesh-<version>.tar.gz`.

Inside: `bin/<basename>` for each artifact, `MANIFEST` (sha256sum lines, checked on the host
after unpacking) and `VERSION`. The archive is reproducible — fixed times, owners and order —
so packaging the same files twice gives the same bytes, the same sha256, and a re-deploy
skips the upload.

Blocking (hashing and gzip of a 200 MB artifact take seconds): run it in an executor.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path

from bot.runbook.changes.releases import MANIFEST, VERSION_FILE, package_name

CHUNK = 1 << 20
# Every entry gets this time: the archive's bytes must not depend on when files were built.
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z


class PackagingError(Exception):
    """Nothing to package, or two artifacts with one name; str() says which globs or files."""


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Package:
    path: Path
    version: str
    size: int
    sha256: str
    artifacts: tuple[Artifact, ...]


def find_artifacts(workdir: Path, patterns: Sequence[str]) -> list[Path]:
    """The files the globs match under workdir, in a stable order; an empty match is an error."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        for match in sorted(glob(pattern, root_dir=workdir, recursive=True)):
            path = workdir / match
            if path.is_file():
                found.setdefault(str(path.resolve()), path)
    if not found:
        raise PackagingError(
            f"no files match the artifacts globs {', '.join(patterns)} in {workdir} "
            "(did the build put them there?)"
        )
    paths = sorted(found.values(), key=lambda p: p.name)
    names = [p.name for p in paths]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise PackagingError(
            f"two artifacts would be installed as bin/{twins[0]}: "
            + ", ".join(str(p) for p in paths if p.name == twins[0])
        )
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_package(version: str, files: Sequence[Path], out_dir: Path) -> Package:
    """Write out_dir/eventmesh-<version>.tar.gz from files (see find_artifacts)."""
    artifacts = tuple(
        Artifact(path.name, path, path.stat().st_size, _sha256(path)) for path in files
    )
    manifest = "".join(f"{a.sha256}  bin/{a.name}\n" for a in artifacts).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / package_name(version)
    # mtime=0 and no file name in the gzip header: the same input, the same bytes.
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        directory = _entry("bin", 0, 0o755)
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for artifact in artifacts:
            mode = 0o755 if artifact.path.stat().st_mode & 0o111 else 0o644
            with artifact.path.open("rb") as data:
                archive.addfile(_entry(f"bin/{artifact.name}", artifact.size, mode), data)
        for name, content in ((MANIFEST, manifest), (VERSION_FILE, f"{version}\n".encode())):
            archive.addfile(_entry(name, len(content), 0o644), io.BytesIO(content))
    return Package(target, version, target.stat().st_size, _sha256(target), artifacts)
