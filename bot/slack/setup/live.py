"""`eventmesh-bot check-config --live`: the config file checked against the world it names.

This machine first (bot/runbook/setup/checks.py `check_offline`), then, at once, Slack
(workspace.py), the hosts, the services and CI. Start-up can run the offline part as is and
the rest in the background, warning for what it finds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import httpx

from bot.config import Config
from bot.runbook.setup.checks import Report, check_offline, check_reachable
from bot.settings import Settings
from bot.slack.setup.workspace import check_workspace


async def check_live(
    config: Config, settings: Settings, environ: Mapping[str, str] = os.environ
) -> Report:
    offline = check_offline(config, environ)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        slack, reachable = await asyncio.gather(
            check_workspace(config, settings), check_reachable(config, offline, http, environ)
        )
    return Report.of(offline, slack, reachable)
