"""Setup problems found while the bot runs, named once as setup problems (never as alerts).

Start-up's offline check (checks.py `check_offline`), the scheduled checks' host reads (a key
file missing, a host not in known_hosts, a host name that does not resolve) and their scrapes
of /metrics (no request counter) each report what they found under a source of their own
("start-up", "host:deploy@dev", "metrics:dev"); a later report of the same source replaces the
earlier one (an empty one: fixed). `current()` is every problem once, however many sources
found it (ten hosts and one missing key file are one line). Listeners hear of every change:
the Slack side (bot/slack/setup/notice.py) keeps one message in the alerts channel up to date.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

from bot.config import Config
from bot.runbook.setup.checks import Problem, check_offline

log = logging.getLogger(__name__)

Listener = Callable[[], None]
RECHECK_EVERY = timedelta(minutes=1)  # the offline checks again: a fixed key file shows


class SetupProblems:
    def __init__(self, log_level: int = logging.WARNING) -> None:
        self._by_source: dict[str, tuple[Problem, ...]] = {}
        self._listeners: list[Listener] = []
        # The console's shipped config cannot reach its hosts by design: it says so quietly.
        self._log_level = log_level

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def report(self, source: str, problems: Iterable[Problem]) -> None:
        """What `source` finds wrong now (nothing: what it found before is fixed)."""
        found = tuple(dict.fromkeys(problems))
        before = self.current()
        if found:
            self._by_source[source] = found
        else:
            self._by_source.pop(source, None)
        after = self.current()
        if after == before:
            return
        for problem in after:
            if problem not in before:
                # The key last: "key_file: <path>" would read as a secret to the redaction.
                log.log(
                    self._log_level, "setup: %s — the key to fix: %s", problem.text, problem.key
                )
        for problem in before:
            if problem not in after:
                log.info("setup: fixed: %s", problem.key)
        for listener in self._listeners:
            listener()

    def current(self) -> list[Problem]:
        """Every problem once, in the order first found."""
        return list(dict.fromkeys(p for found in self._by_source.values() for p in found))


def check_this_machine(config: Config, problems: SetupProblems, environ: Mapping[str, str]) -> None:
    """The offline checks (key file, known_hosts, the CI token variable), reported under
    their own source: at start-up, and again now and then so that a fix shows."""
    problems.report("this machine", check_offline(config, environ).problems)
