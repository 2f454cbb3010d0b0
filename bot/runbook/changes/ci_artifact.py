"""`deploy.source: ci`: the package is the CI run's artifact, so nothing is built here.

The run is the workflow's newest run for the commit deployed (`workdir`'s HEAD; without a git
checkout, the newest run on the default branch), and it must have passed. Its artifact
`deploy.ci_artifact` (GitHub Actions artifacts API: list the run's artifacts, download the zip,
following GitHub's redirect) holds one `eventmesh-<version>.tar.gz`, the package /deploy
would have made (bin/, MANIFEST, VERSION); that file is deployed as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bot.runbook.changes import releases
from bot.runbook.changes.ci import CiClient, CiError, CiRun
from bot.runbook.changes.packaging import Package

PACKAGE_NAME = re.compile(r"eventmesh-([A-Za-z0-9._-]{1,64})\.tar\.gz")


@dataclass(frozen=True)
class CiPackage:
    package: Package
    run: CiRun


async def fetch_package(
    ci: CiClient, commit: str | None, artifact: str, version: str | None, out_dir: Path
) -> CiPackage:
    """The package from CI; CiError (one line, what to fix) when there is none to deploy."""
    run = await _green_run(ci, commit)
    url = await ci.artifact_url(run, artifact)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{artifact}.zip"
    await ci.download(url, archive)
    try:
        package = await asyncio.to_thread(_unpack, archive, out_dir, version, f"{artifact}")
    finally:
        archive.unlink(missing_ok=True)
    return CiPackage(package, run)


async def _green_run(ci: CiClient, commit: str | None) -> CiRun:
    if commit is not None:
        runs = await ci.commit_runs(commit)
        where = f"commit {commit[:7]}"
    else:
        branch, runs = await ci.recent_runs()
        where = f"{branch} (workdir is not a git checkout)"
    workflow = ci.settings.workflow
    if not runs:
        raise CiError(f"{workflow} has no run for {where}: nothing to deploy")
    run = runs[0]
    if not run.passed:
        raise CiError(f"the {workflow} run for {where} is {run.outcome}, not green ({run.url})")
    return run


def _unpack(archive: Path, out_dir: Path, version: str | None, artifact: str) -> Package:
    try:
        with zipfile.ZipFile(archive) as zipped:
            found = [
                info
                for info in zipped.infolist()
                if PACKAGE_NAME.fullmatch(PurePosixPath(info.filename).name)
            ]
            if len(found) != 1:
                names = ", ".join(PurePosixPath(i.filename).name for i in found) or "none"
                raise CiError(
                    f"the artifact {artifact} must hold one eventmesh-<version>.tar.gz "
                    f"(it holds: {names})"
                )
            (info,) = found
            name = PurePosixPath(info.filename).name  # never a path from the zip
            match = PACKAGE_NAME.fullmatch(name)
            assert match is not None
            built = match.group(1)
            if version is not None and built != version:
                raise CiError(
                    f"CI built {name}, not {releases.package_name(version)}: deploy "
                    f"{built} or the commit that builds {version}"
                )
            target = out_dir / name
            digest = hashlib.sha256()
            with zipped.open(info) as source, target.open("wb") as written:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    written.write(chunk)
    except zipfile.BadZipFile:
        raise CiError(f"the artifact {artifact} is not a zip file") from None
    return Package(target, built, target.stat().st_size, digest.hexdigest(), ())
