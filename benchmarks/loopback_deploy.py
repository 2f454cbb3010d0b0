"""ack_latency --under-load's deploy: a real `/deploy` to a host that is a loopback OpenSSH sshd.

The environment is the test suite's deploy target (tests/support/deploy_env.py: the demo
service built, tested, packaged, uploaded, installed and restarted for real) reached over SSH
on a throwaway sshd (tests/support/sshd.py), with one more artifact: `payload.bin`, random
bytes (incompressible), so the package is big enough that its packaging (gzip and sha256 in
the bot's executor) and its upload (paramiko's encryption on its own thread) are running
while a burst is acked. Each round starts a deploy of a new version (a different package:
nothing is skipped as already held) and sends its burst once the upload has begun, which is
seen on the host itself: the upload's temporary file in `<install_dir>/packages`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SIGNING_SECRET, new_channel
from tests.support.conversation import text_of
from tests.support.deploy_env import DemoTarget, demo_target
from tests.support.deploy_reports import final_deploy, finished, is_deploy_message
from tests.support.slack_fake import SlackFake
from tests.support.slack_signing import signed_headers, slash_command_body
from tests.support.sshd import Sshd, start_sshd
from tests.support.waiting import wait_until

ENVIRONMENT = "loopback"
DEPLOYER = "U0BENCHDEPLOY"
PAYLOAD = "payload.bin"
# A deploy builds, tests, packages and uploads before the burst; 4 of them share 2 busy cores.
STARTS_UPLOAD_WITHIN_S = 120.0
FINISHES_WITHIN_S = 180.0
_WRITE_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeployRun:
    """One round's deploy as the benchmark saw it."""

    version: str
    upload_at_burst_start: bool  # the upload's temporary file was on the host
    upload_at_burst_end: bool
    result: str  # the deploy message's summary once finished ("Deployed v1.0.1 to ...")
    upload_line: str  # its Upload step's line (size, seconds)


class LoopbackDeploy:
    """The sshd, the target's files and service, and the deploys sent to the bot."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, payload_mb: int) -> None:
        self.sshd: Sshd = start_sshd(tmp / "sshd")
        stack.callback(self.sshd.stop)
        self.target: DemoTarget = demo_target(tmp, ENVIRONMENT)
        stack.callback(self.target.stop)
        self.payload_mb = payload_mb
        with (self.target.workdir / PAYLOAD).open("wb") as out:
            for _ in range(payload_mb):
                out.write(os.urandom(_WRITE_CHUNK))

    def environment(self, check_interval: str) -> dict[str, Any]:
        """The config's entry: the demo release plus the payload, on the sshd's one host."""
        env = self.target.environment(
            artifacts=["build/eventmesh-api", PAYLOAD], check_interval=check_interval
        )
        del env["transport"]
        env["hosts"] = [str(self.sshd.host)]
        return env

    def ssh_section(self) -> dict[str, Any]:
        return {
            "key_file": str(self.sshd.client_key),
            "known_hosts": str(self.sshd.known_hosts()),
            "connect_timeout": "5s",
            "command_timeout": "120s",
        }

    def start(self, url: str, fake: SlackFake, version: str) -> str:
        """Send `/deploy loopback <version>` as the deployer; the channel it answers in."""
        channel = new_channel()
        body = slash_command_body(
            "/deploy",
            f"{ENVIRONMENT} {version}",
            user_id=DEPLOYER,
            channel_id=channel,
            response_url=fake.response_url(),
        )
        sent = httpx.post(
            url, content=body, headers=signed_headers(SIGNING_SECRET, body), timeout=15
        )
        if sent.status_code != 200:
            raise RuntimeError(f"/deploy {ENVIRONMENT} {version}: HTTP {sent.status_code}")
        return channel

    def uploading(self) -> bool:
        """The upload's temporary file is on the host (bot/transport/files.py temp_name)."""
        packages = self.target.install_dir / "packages"
        return any(packages.glob(".*.upload-*"))

    def wait_uploading(self, fake: SlackFake, channel: str) -> None:
        """Until the upload runs; an error if the deploy finished without one being seen."""

        def started_or_over() -> bool:
            return self.uploading() or _finished_message(fake, channel) is not None

        wait_until("the deploy's upload starts", started_or_over, STARTS_UPLOAD_WITHIN_S)
        if not self.uploading():
            over = _finished_message(fake, channel)
            summary = over.get("text", "") if over else "?"
            raise RuntimeError(f"the deploy ended before its upload was seen: {summary}")

    def finish(
        self, fake: SlackFake, channel: str, version: str, at_start: bool, at_end: bool
    ) -> DeployRun:
        """Wait for the deploy's result; it must have deployed."""
        message = final_deploy(fake, channel, timeout=FINISHES_WITHIN_S)
        result = message.get("text", "")
        if not result.startswith(f"Deployed v{version}"):
            raise RuntimeError(f"the deploy of {version} did not deploy: {text_of(message)}")
        lines = text_of(message).splitlines()
        # The step's line, then its host's (what was sent, how long it took).
        at = next((n for n, line in enumerate(lines) if "*Upload*" in line), None)
        upload = "?" if at is None else " ".join(line.strip() for line in lines[at : at + 2])
        return DeployRun(version, at_start, at_end, result, upload)


def _finished_message(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    """The channel's deploy message if it has its result (final_deploy, without waiting)."""
    for message in fake.channel_messages(channel):
        if is_deploy_message(message):
            return message if finished(message) else None
    return None


def version_of(round_number: int) -> str:
    """Each deploy its own version: a package the host does not hold yet."""
    return f"1.0.{round_number}"
