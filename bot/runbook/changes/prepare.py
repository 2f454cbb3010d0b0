"""What an approver approves, made before the request is asked: version → build → test →
package, in a workspace of its own (workspace.py), the same steps a deploy runs.

The package is written to `package_dir` and stays there until the request ends (approved and
deployed, rejected, or expired): the approver approves that file — its sha256, the commit it
was built from — and the approved deploy deploys exactly it (deploy_steps.py `pinned`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from bot.runbook.changes.activate import show_version
from bot.runbook.changes.deploy_request import PinnedPackage
from bot.runbook.changes.deploy_steps import STEPS, DeploySteps
from bot.runbook.changes.procedure import StepError
from bot.runbook.changes.progress import Event, Finished, Outcome

PREPARED = ("version", "build", "test", "package")
TITLES = dict(STEPS)


class Prepare(DeploySteps):
    """`run()` yields the four steps' events and ends with Finished: 'prepared' or 'failed'."""

    def prepare_into(self, package_dir: Path) -> Prepare:
        self.package_dir = package_dir
        return self

    async def run(self) -> AsyncIterator[Event]:
        steps = {step.key: step for step in self.steps()}
        try:
            for key in PREPARED:
                async for event in steps[key].run([]):
                    yield event
        except StepError as failure:
            if not failure.announced:
                yield failure.event
            what = show_version(self.version) if self.version else "the new version"
            summary = (
                f"The build of {what} for {self.env.name} failed at "
                f"{TITLES[failure.event.step]}: {failure.event.error}. Nothing was asked."
            )
            failed = Outcome.of(
                "failed", summary, failure.event, version=self.version, seconds=self._seconds
            )
            yield Finished(failed)
            return
        finally:
            await self.close_workspace()
        package = self.pinned_package()
        summary = (
            f"{show_version(package.version)} built, tested and packaged: "
            f"{package.path.name}, sha256 {package.sha256}"
        )
        yield Finished(Outcome("prepared", summary, version=package.version))

    def pinned_package(self) -> PinnedPackage:
        """The package made (after a 'prepared' run), as the request pins it."""
        assert self.package is not None and self.version is not None
        package = self.package
        return PinnedPackage(
            path=package.path,
            sha256=package.sha256,
            size=package.size,
            version=self.version,
            commit=self.commit,
            ci_run=self.ci_run.url if self.ci_run is not None else None,
            source=self.settings.source,
        )
