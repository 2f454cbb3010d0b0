"""requirements.lock (the image's dependencies) keeps up with pyproject.toml.

The Dockerfile installs the lock and then the bot with --no-deps, so a dependency added to
pyproject.toml without regenerating the lock would be missing from the image only.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def locked() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def test_every_image_dependency_is_locked_with_a_hash_at_an_allowed_version() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["postgres"],
        *pyproject["build-system"]["requires"],
    ]
    pins = locked()
    stale = []
    for line in wanted:
        requirement = Requirement(line)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            stale.append(f"{line} (locked: {version or 'missing'})")
    assert not stale, "requirements.lock is out of date — run scripts/lock: " + "; ".join(stale)

    text = (REPO / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert not unhashed, f"pinned without a hash: {unhashed}"
