"""How commands reach an environment's hosts: `open_transports(env, ssh)`.

    async with open_transports(env, config.ssh) as hosts:
        for host in hosts:                       # one Transport per host, in config order
            result = await host.run(["systemctl", "is-active", "eventmesh-api"])

`transport: local` gives [LocalTransport()]; `hosts:` gives one SshTransport per host. SSH
connections open on a host's first command and are re-used for the rest of the block; leaving
the block closes them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.config import Environment, SshSettings
from bot.transport.base import (
    Command,
    CommandResult,
    CommandTimedOut,
    ConnectFailed,
    HostKeyRejected,
    Shell,
    Transport,
    TransportError,
    UploadResult,
    command_line,
)
from bot.transport.local import LocalTransport
from bot.transport.ssh import SshTransport

log = logging.getLogger(__name__)

__all__ = [
    "Command",
    "CommandResult",
    "CommandTimedOut",
    "ConnectFailed",
    "HostKeyRejected",
    "LocalTransport",
    "Shell",
    "SshTransport",
    "Transport",
    "TransportError",
    "UploadResult",
    "command_line",
    "open_transports",
    "transports_for",
]


def transports_for(env: Environment, ssh: SshSettings) -> list[Transport]:
    """The environment's hosts as transports (nothing is connected yet); close each when done."""
    timeout_s = ssh.command_timeout.total_seconds()
    if env.transport == "local":
        return [LocalTransport(command_timeout_s=timeout_s, environment=env.deploy.env)]
    return [SshTransport(host, ssh) for host in env.hosts]


@asynccontextmanager
async def open_transports(env: Environment, ssh: SshSettings) -> AsyncIterator[list[Transport]]:
    transports = transports_for(env, ssh)
    try:
        yield transports
    finally:
        results = await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)
        for transport, result in zip(transports, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing %s failed: %s", transport.target, result)
