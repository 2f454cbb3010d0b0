"""Setup problems, named as such: what `eventmesh-bot check-config --live` asks of the hosts,
the services and CI (the Slack side is bot/slack/setup/workspace.py).

Two parts, so that start-up can use them the same way:

- `check_offline(config, environ)`: this machine only, at once — the SSH key readable, every
  host pinned in known_hosts, the CI token variable set. Nothing goes over the network.
- `check_reachable(config, environ, http)`: over the network — each host reachable and
  accepting the key, each base_url answering (and which request counter its /metrics has,
  for the error rate), the CI token accepted by GitHub. What the offline part already found
  wrong is not tried again (one line per problem).

Each problem is one line naming the key to fix and how; what checked out is said in `found`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from bot.config import Config, Host
from bot.runbook.alerts.error_rate import RequestCounter, RequestCounts
from bot.runbook.changes.ci import CiClient, CiError
from bot.transport import TransportError
from bot.transport.known_hosts import pinned_keys
from bot.transport.ssh import KeyFileError, SshTransport, client_key, keyscan_command

SERVICE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Problem:
    """One thing to fix: `key` is the config key or environment variable, `text` what is
    wrong with it and what to do."""

    key: str
    text: str

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    found: list[str] = field(default_factory=list)  # what checked out, one line each

    @classmethod
    def of(cls, *parts: Report) -> Report:
        """The parts' problems and findings, in order."""
        return cls(
            [problem for part in parts for problem in part.problems],
            [line for part in parts for line in part.found],
        )


def host_keys(config: Config) -> dict[Host, list[str]]:
    """Each distinct host, with every config key that names it, in config order."""
    hosts: dict[Host, list[str]] = {}
    for name, env in config.environments.items():
        for i, host in enumerate(env.hosts):
            hosts.setdefault(host, []).append(f"environments.{name}.hosts[{i}]")
    return hosts


def _key_of(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]} (also {', '.join(keys[1:])})"


# --- this machine ----------------------------------------------------------------------------


def check_offline(config: Config, environ: Mapping[str, str] = os.environ) -> Report:
    """What can be checked here and now: the SSH key, known_hosts, the CI token variable."""
    report = Report()
    hosts = host_keys(config)
    if hosts:
        try:
            client_key(config.ssh.key_file)
        except KeyFileError as exc:
            report.problems.append(Problem("ssh.key_file", str(exc).removeprefix("ssh.key_file ")))
        report.problems.extend(_unpinned(config, hosts))
    ci = config.ci
    if ci is not None and not environ.get(ci.token_env, "").strip():
        report.problems.append(
            Problem(
                "ci.token_env",
                f"{ci.token_env} is not set: deploys would stop at the CI check — export "
                f"{ci.token_env} where the bot runs (a GitHub token that can read "
                f"{ci.repository}'s Actions)",
            )
        )
    return report


def _unpinned(config: Config, hosts: Mapping[Host, list[str]]) -> Iterator[Problem]:
    path = config.ssh.known_hosts
    for host, keys in hosts.items():
        try:
            pinned = pinned_keys(path, host.hostname, host.port)
        except OSError as exc:
            yield Problem("ssh.known_hosts", f"cannot read {path} ({exc.strerror})")
            return
        if not pinned.keys:
            missing = "" if pinned.file_exists else " (the file does not exist)"
            yield Problem(
                _key_of(keys),
                f"{host} is not in ssh.known_hosts {path}{missing} — after checking its "
                f"fingerprint with the host's owner: {keyscan_command(host, path)}",
            )


# --- over the network ------------------------------------------------------------------------


async def check_reachable(
    config: Config,
    offline: Report,
    http: httpx.AsyncClient,
    environ: Mapping[str, str] = os.environ,
) -> Report:
    """Hosts, services and CI, at once; skips what `offline` already found wrong."""
    parts = await asyncio.gather(
        _check_hosts(config, offline),
        _check_services(config, http),
        _check_ci(config, http, environ),
    )
    return Report.of(*parts)


async def _check_hosts(config: Config, offline: Report) -> Report:
    report = Report()
    hosts = host_keys(config)
    known_bad = {problem.key for problem in offline.problems}
    if not hosts or known_bad & {"ssh.key_file", "ssh.known_hosts"}:
        return report  # every login would fail the same way: the offline line says why
    tried = {host: keys for host, keys in hosts.items() if _key_of(keys) not in known_bad}
    results = await asyncio.gather(*(_log_in(host, config) for host in tried))
    for keys, problem in zip(tried.values(), results, strict=True):
        if problem is not None:
            report.problems.append(Problem(_key_of(keys), problem))
    reached = results.count(None)
    if reached:
        report.found.append(
            f"SSH: {reached} of {len(hosts)} host(s) reached with ssh.key_file, host keys pinned"
        )
    return report


async def _log_in(host: Host, config: Config) -> str | None:
    """None if the host let the bot in and ran a command; else what went wrong."""
    transport = SshTransport(host, config.ssh)
    try:
        await transport.run(["true"], timeout_s=config.ssh.connect_timeout.total_seconds())
    except TransportError as exc:
        return exc.problem
    finally:
        await transport.close()
    return None


async def _check_services(config: Config, http: httpx.AsyncClient) -> Report:
    counter = RequestCounter.of(config.metrics)
    checked = await asyncio.gather(
        *(
            _check_service(name, env.base_url, counter, http)
            for name, env in config.environments.items()
        )
    )
    return Report.of(*checked)


async def _check_service(
    name: str, base_url: str, counter: RequestCounter, http: httpx.AsyncClient
) -> Report:
    key = f"environments.{name}.base_url"
    healthz = await _get(http, f"{base_url}/healthz")
    if isinstance(healthz, str):
        fix = "start the service there, or correct base_url"
        return Report([Problem(key, f"{base_url} does not answer ({healthz}) — {fix}")])
    metrics = await _get(http, f"{base_url}/metrics")
    if isinstance(metrics, str) or metrics.status_code != 200:
        why = metrics if isinstance(metrics, str) else f"HTTP {metrics.status_code}"
        needs = "the error rate reads the service's Prometheus metrics there"
        return Report([Problem(key, f"{base_url}/metrics answered {why}: {needs}")])
    counts = counter.read(metrics.text)
    if not isinstance(counts, RequestCounts):
        return Report([Problem(key, counts)])
    return Report(
        found=[
            f"{name}: {base_url} answers (healthz HTTP {healthz.status_code}); error rate "
            f"from {counts.describe()}"
        ]
    )


async def _get(http: httpx.AsyncClient, url: str) -> httpx.Response | str:
    try:
        return await http.get(url, timeout=SERVICE_TIMEOUT_S)
    except httpx.TimeoutException:
        return f"nothing within {SERVICE_TIMEOUT_S:g}s"
    except httpx.HTTPError as exc:
        return _cause(exc)


def _cause(exc: httpx.HTTPError) -> str:
    """What went wrong in a few words ('connection refused', 'cannot resolve the host name')."""
    text = str(exc) or type(exc).__name__
    if "Name or service not known" in text or "No address associated" in text:
        return "cannot resolve the host name"
    if "Connection refused" in text or "All connection attempts failed" in text:
        return "connection refused"
    return text


async def _check_ci(config: Config, http: httpx.AsyncClient, environ: Mapping[str, str]) -> Report:
    ci = config.ci
    if ci is None or not environ.get(ci.token_env, "").strip():
        return Report()  # no CI gate, or the offline part said the token is not set
    try:
        _, runs = await CiClient(ci, http, environ).recent_runs()
    except CiError as exc:
        return Report([Problem("ci", str(exc))])
    latest = f"latest run: {runs[0].outcome}" if runs else "no runs yet"
    return Report(
        found=[f"CI: {ci.workflow} of {ci.repository} read with ${ci.token_env} ({latest})"]
    )
