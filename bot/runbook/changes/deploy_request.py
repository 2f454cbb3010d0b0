"""What a deploy is asked to do: the environment, the version, the runbook's Deployment
Options, who asked and who approved. The version is checked before it goes anywhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
class DeployRequest:
    environment: Environment
    version: str | None
    options: DeployOptions
    requested_by: str
    approved_by: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and not releases.is_version(self.version):
            raise ValueError(f"{self.version!r} is not a version")
