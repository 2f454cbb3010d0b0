"""What a deploy is asked to do: the environment, the version, the runbook's Deployment
Options, who asked and who approved — and, for an approved deploy, the package the approver
approved (built, tested and packaged before the request was asked). The version is checked
before it goes anywhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bot.config import Environment
from bot.runbook.changes import releases


@dataclass(frozen=True)
class DeployOptions:
    dry_run: bool = False
    skip_tests: bool = False
    no_backup: bool = False

    def flags(self) -> list[str]:
        return [
            flag
            for flag, on in (
                ("--dry-run", self.dry_run),
                ("--skip-tests", self.skip_tests),
                ("--no-backup", self.no_backup),
            )
            if on
        ]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> DeployOptions:
        if not isinstance(data, dict):
            return cls()
        return cls(
            dry_run=bool(data.get("dry_run")),
            skip_tests=bool(data.get("skip_tests")),
            no_backup=bool(data.get("no_backup")),
        )


@dataclass(frozen=True)
class PinnedPackage:
    """The package an approver approved: exactly this file (its sha256) is deployed."""

    path: Path
    sha256: str
    size: int
    version: str
    commit: str | None = None  # the commit built, when workdir is a git checkout
    ci_run: str | None = None  # the CI run of that commit (its page), when one was found
    source: str = "build"  # build (on the bot's machine) | ci (the CI run's artifact)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: object) -> PinnedPackage | None:
        """None when data is not a pinned package (an older request, or no package)."""
        if not isinstance(data, dict):
            return None
        try:
            sha256, version = str(data["sha256"]), str(data["version"])
            return cls(
                path=Path(str(data["path"])),
                sha256=sha256,
                size=int(data.get("size") or 0),
                version=version,
                commit=str(data["commit"]) if data.get("commit") else None,
                ci_run=str(data["ci_run"]) if data.get("ci_run") else None,
                source=str(data.get("source") or "build"),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class DeployRequest:
    environment: Environment
    version: str | None
    options: DeployOptions
    requested_by: str
    approved_by: str | None = None
    package: PinnedPackage | None = None  # an approved deploy's: deployed as it is

    def __post_init__(self) -> None:
        if self.version is not None and not releases.is_version(self.version):
            raise ValueError(f"{self.version!r} is not a version")
