"""One host's troubleshooting checks in one command: the runbook's Health Check Failures and
Performance Issues, as the host itself sees them.

    ps aux | grep riptide              the service's processes: pid, uptime, RSS, CPU
    netstat -tlnp | grep 8080          who holds base_url's port (ss where it is there)
    curl -v http://localhost:8080/healthz   healthz from the host itself, on loopback
    tail /var/log/eventmesh/api.log    errors, warnings and panics by type (log_lines.py)
    free -h, df, uptime                memory, disk of the install and log folders, load

The script is a constant: the config's values (process name, URL, paths) are assigned to shell
variables quoted, and nothing a user typed is in it. Each check writes its own section after a
random marker (no process name or log line can forge one); a check that cannot be made (no
`ss`, no log file, `ps` refused) is that section's problem, never the host's, and a host that
cannot be reached is a `HostDiagnosis` with its problem, never an error.
"""

from __future__ import annotations

import logging
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from bot.config import Environment
from bot.runbook.health.log_lines import (
    LOG_STATE,
    MAX_LOG_BYTES,
    Kind,
    LogTally,
    kinds_of,
    log_text,
    shown,
    tally,
)
from bot.runbook.health.resources import df_kib, meminfo_bytes, split_sections
from bot.transport import Shell, Transport, TransportError

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 5  # the local healthz request
COMMAND_TIMEOUT_S = 45.0  # the whole command on a host: a hung host is a finding, not a wait
LAST_LINES = 5  # error lines (or, when the service is down, last lines) shown per host

# Where curl and wget are missing: the same request from Python's standard library.
_PYTHON_GET = """\
import ssl, sys, time, urllib.error, urllib.request
started = time.monotonic()
try:
    code = urllib.request.urlopen(
        sys.argv[1], timeout=float(sys.argv[2]), context=ssl._create_unverified_context()
    ).status
except urllib.error.HTTPError as exc:
    code = exc.code
except Exception as exc:
    print("error", exc)
    sys.exit(0)
print(code, round(time.monotonic() - started, 6))
"""

_SCRIPT = """\
m={marker}
process={process}
url={url}
log={log}
lines={lines}
py={python}
fmt='%{{http_code}} %{{time_total}}\\n'
echo "$m:ps"
if out=$(ps -eo pid=,etimes=,rss=,pcpu=,args= 2>&1); then
  echo ok
  printf '%s\\n' "$out" | P="$process" M="$m" awk '# {marker}
index($0, ENVIRON["P"]) && !index($0, ENVIRON["M"])'
else
  echo failed; printf '%s\\n' "$out" | tail -n 2
fi
echo "$m:listen"
if command -v ss >/dev/null 2>&1; then echo ss; ss -tlnp 2>&1
elif command -v netstat >/dev/null 2>&1; then echo netstat; netstat -tlnp 2>&1
else echo none; fi
echo "$m:http"
if command -v curl >/dev/null 2>&1; then
  echo curl; curl -sS -k -m {timeout} -o /dev/null -w "$fmt" "$url" 2>&1
elif command -v wget >/dev/null 2>&1; then
  echo wget; wget -q -S -O /dev/null -T {timeout} {wget_tls}"$url" 2>&1; echo "exit $?"
elif command -v python3 >/dev/null 2>&1; then
  echo python3; python3 -c "$py" "$url" {timeout} 2>&1
else echo none; fi
disk() {{
  p=$2
  while [ ! -e "$p" ] && [ "$p" != / ] && [ "$p" != . ]; do p=$(dirname -- "$p"); done
  echo "$m:df-$1"; echo "$p"; df -P -k -- "$p" 2>&1
}}
disk install {install}
disk log {log_dir}
echo "$m:meminfo"; cat /proc/meminfo 2>&1
echo "$m:loadavg"; cat /proc/loadavg 2>&1
echo "$m:cpus"; getconf _NPROCESSORS_ONLN 2>&1
echo "$m:log"
{log_state} tail -n "$lines" -- "$log" | tail -c {max_bytes}; fi
"""


@dataclass(frozen=True)
class DiagnosisSpec:
    """What to look for on each host, from the environment's config."""

    process: str
    log_file: str
    log_lines: int
    install_dir: str
    port: int
    local_url: str  # healthz on the host's loopback, at base_url's port and path

    @classmethod
    def of(cls, env: Environment, log_lines: int) -> DiagnosisSpec:
        parts = urlsplit(env.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(
            process=env.deploy.process,
            log_file=env.deploy.log_file,
            log_lines=log_lines,
            install_dir=env.deploy.install_dir,
            port=port,
            local_url=f"{parts.scheme}://127.0.0.1:{port}{parts.path}/healthz",
        )

    def script(self, marker: str) -> str:
        https = self.local_url.startswith("https:")
        return _SCRIPT.format(
            marker=marker,
            process=shlex.quote(self.process),
            url=shlex.quote(self.local_url),
            log=shlex.quote(self.log_file),
            lines=self.log_lines,
            python=shlex.quote(_PYTHON_GET),
            timeout=HTTP_TIMEOUT_S,
            wget_tls="--no-check-certificate " if https else "",
            install=shlex.quote(self.install_dir),
            log_dir=shlex.quote(posixpath.dirname(self.log_file) or "."),
            log_state=LOG_STATE,
            max_bytes=MAX_LOG_BYTES,
        )


# --- what a host answered -------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProcess:
    pid: int
    uptime_s: int
    rss_bytes: int
    cpu_percent: float  # ps's %CPU: the average since the process started
    command: str  # redacted


@dataclass(frozen=True)
class Listener:
    address: str
    pid: int | None  # None: the tool may not name it (another user's process, not root)
    name: str | None


@dataclass(frozen=True)
class PortCheck:
    port: int
    tool: str | None = None  # ss or netstat
    listeners: tuple[Listener, ...] = ()  # on this port
    problem: str | None = None


@dataclass(frozen=True)
class LocalHealth:
    url: str
    tool: str | None = None  # curl, wget or python3
    status: int | None = None
    seconds: float | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Disk:
    role: str  # install or log
    path: str  # the folder measured (the nearest existing one)
    percent: float | None = None
    used_bytes: int = 0
    total_bytes: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class LogFindings:
    path: str
    lines_asked: int
    tally: LogTally | None = None
    last_errors: tuple[str, ...] = ()  # panic and error lines, the last few, redacted
    last_lines: tuple[str, ...] = ()  # the last few lines of any kind, redacted
    cut: bool = False
    problem: str | None = None


@dataclass(frozen=True)
class Memory:
    percent: float
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class HostDiagnosis:
    target: str
    problem: str | None = None  # the host could not be reached or did not answer
    processes: tuple[ServiceProcess, ...] | None = None
    process_problem: str | None = None
    port: PortCheck | None = None
    local: LocalHealth | None = None
    log: LogFindings | None = None
    disks: tuple[Disk, ...] = ()
    memory: Memory | None = None
    load: tuple[float, float, float] | None = None
    cpus: int | None = None
    seconds: float = 0.0

    @property
    def running(self) -> bool | None:
        """Whether the service runs here; None when that could not be told."""
        return None if self.processes is None else bool(self.processes)

    @property
    def service_pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.processes or ())

    @property
    def main_process(self) -> ServiceProcess | None:
        """The service's process on its port, else the first that matched (on a shared host
        the name may match more than the service)."""
        holders = {listener.pid for listener in (self.port.listeners if self.port else ())}
        ranked = sorted(self.processes or (), key=lambda process: process.pid not in holders)
        return ranked[0] if ranked else None

    @property
    def others_on_port(self) -> tuple[Listener, ...]:
        """Whoever listens on the service's port and is not one of its processes."""
        if self.port is None:
            return ()
        return tuple(x for x in self.port.listeners if x.pid not in self.service_pids)


async def diagnose_host(transport: Transport, spec: DiagnosisSpec) -> HostDiagnosis:
    """Run the checks on one host; never raises for the host's sake."""
    marker = f"@@eventmesh-diagnose-{secrets.token_hex(8)}"
    started = time.monotonic()
    try:
        result = await transport.run(Shell(spec.script(marker)), timeout_s=COMMAND_TIMEOUT_S)
    except TransportError as exc:
        return HostDiagnosis(transport.target, problem=exc.problem)
    try:
        diagnosis = parse_answer(transport.target, spec, result.stdout, result.stderr, marker)
    except Exception:  # a parser's blind spot is this host's finding, not the diagnosis's end
        log.exception("%s: the diagnosis's answer could not be read", transport.target)
        diagnosis = HostDiagnosis(transport.target, problem="its answer could not be read")
    return replace(diagnosis, seconds=time.monotonic() - started)


def parse_answer(
    target: str, spec: DiagnosisSpec, stdout: str, stderr: str, marker: str
) -> HostDiagnosis:
    """The host's answer, section by section; a section that makes no sense is its problem."""
    sections = split_sections(stdout, marker)
    if "ps" not in sections:
        last = stderr.strip().splitlines()[-1:] or ["no answer"]
        return HostDiagnosis(target, problem=f"the checks did not run: {last[0][:200]}")
    processes, process_problem = parse_processes(sections["ps"])
    return HostDiagnosis(
        target,
        processes=processes,
        process_problem=process_problem,
        port=parse_listeners(sections.get("listen"), spec.port),
        local=parse_local_health(sections.get("http"), spec.local_url),
        log=parse_log(sections.get("log"), stderr, spec),
        disks=tuple(_disk(role, sections.get(f"df-{role}")) for role in ("install", "log")),
        memory=_memory(sections.get("meminfo")),
        load=_load(sections.get("loadavg")),
        cpus=_cpus(sections.get("cpus")),
    )


def parse_processes(
    section: Sequence[str],
) -> tuple[tuple[ServiceProcess, ...] | None, str | None]:
    """`ps -eo pid=,etimes=,rss=,pcpu=,args=` lines (already those matching the process)."""
    if not section or section[0].strip() != "ok":
        said = " ".join(line.strip() for line in section[1:]).strip()
        return None, f"ps failed: {said[:200] or 'no output'}"
    processes = []
    for line in section[1:]:
        fields = line.split(None, 4)
        try:
            pid, uptime, rss = int(fields[0]), int(fields[1]), int(fields[2])
            cpu = float(fields[3])
        except (ValueError, IndexError):
            continue
        # Shown in the channel: a command line can carry a secret (--token=…).
        command = shown(fields[4]) if len(fields) > 4 else ""
        processes.append(ServiceProcess(pid, uptime, rss * 1024, cpu, command))
    return tuple(processes), None


_SS_USER = re.compile(r'\("((?:[^"\\]|\\.)*)",pid=(\d+)')
_PORT = re.compile(r":(\d+)$")


def parse_listeners(section: Sequence[str] | None, port: int) -> PortCheck:
    """`ss -tlnp` or `netstat -tlnp` output: who listens on `port`."""
    if not section:
        return PortCheck(port, problem="the host did not say")
    tool, lines = section[0].strip(), section[1:]
    if tool == "none":
        return PortCheck(port, problem="neither ss nor netstat is installed on the host")
    parse = _ss_line if tool == "ss" else _netstat_line
    listeners: list[Listener] = []
    understood = False
    for line in lines:
        found = parse(line)
        if found is None:
            continue
        understood = True
        address, holders = found
        match = _PORT.search(address)
        if match is None or int(match[1]) != port:
            continue
        listeners += [Listener(address, pid, name) for pid, name in holders]
    if not understood and lines and not any(_is_header(line) for line in lines):
        return PortCheck(port, tool, problem=f"{tool} failed: {' '.join(lines)[:200]}")
    return PortCheck(port, tool, tuple(listeners))


def _is_header(line: str) -> bool:
    return line.startswith(("State", "Netid", "Active", "Proto", "("))


def _ss_line(line: str) -> tuple[str, list[tuple[int | None, str | None]]] | None:
    # LISTEN 0 128 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=123,fd=6))
    words = line.split()
    if len(words) < 5 or words[0] != "LISTEN":
        return None
    holders: list[tuple[int | None, str | None]] = [
        (int(pid), name) for name, pid in _SS_USER.findall(line)
    ]
    return words[3], holders or [(None, None)]


def _netstat_line(line: str) -> tuple[str, list[tuple[int | None, str | None]]] | None:
    # tcp 0 0 127.0.0.1:8080 0.0.0.0:* LISTEN 123/python3   (or "-": not ours to see)
    words = line.split(None, 6)
    if len(words) < 6 or not words[0].startswith("tcp") or words[5] != "LISTEN":
        return None
    owner = words[6].strip() if len(words) > 6 else "-"
    pid, _, name = owner.partition("/")
    if not pid.isdigit():
        return words[3], [(None, None)]
    return words[3], [(int(pid), name.strip() or None)]


_STATUS_AND_TIME = re.compile(r"^(\d{3}) ([0-9.]+)$")
_WGET_STATUS = re.compile(r"HTTP/\S+ (\d{3})")
_WGET_EXIT = {
    1: "wget failed",
    4: "no answer (connection refused or timed out)",
    5: "TLS failed",
    8: "the server answered with an error",
}


def parse_local_health(section: Sequence[str] | None, url: str) -> LocalHealth:
    """curl's `<status> <seconds>` (and its error line), wget's headers, or python's line."""
    if not section:
        return LocalHealth(url, problem="the host did not say")
    tool, lines = section[0].strip(), [line.strip() for line in section[1:] if line.strip()]
    if tool == "none":
        return LocalHealth(url, problem="neither curl, wget nor python3 is installed on the host")
    if tool == "wget":
        return _wget(url, lines)
    said = [line for line in lines if not _STATUS_AND_TIME.match(line)]
    for line in reversed(lines):
        match = _STATUS_AND_TIME.match(line)
        if match and match[1] != "000":
            return LocalHealth(url, tool, int(match[1]), float(match[2]))
    problem = " ".join(said)[:200] if said else "no answer"
    problem = re.sub(r"^(?:curl: \(\d+\) |error )", "", problem)
    return LocalHealth(url, tool, problem=problem)


def _wget(url: str, lines: Sequence[str]) -> LocalHealth:
    codes = [int(m[1]) for line in lines if (m := _WGET_STATUS.search(line))]
    if codes:
        return LocalHealth(url, "wget", codes[-1])
    exits = [line for line in lines if line.startswith("exit ")]
    code = int(exits[-1].split()[1]) if exits and exits[-1].split()[1].isdigit() else 1
    return LocalHealth(url, "wget", problem=_WGET_EXIT.get(code, f"wget exited with {code}"))


def parse_log(section: Sequence[str] | None, stderr: str, spec: DiagnosisSpec) -> LogFindings:
    text = log_text(section, stderr)
    if text.problem is not None:
        return LogFindings(spec.log_file, spec.log_lines, problem=text.problem)
    lines = kinds_of(text.lines)
    errors = [line.text for line in lines if line.kind in (Kind.PANIC, Kind.ERROR)]
    return LogFindings(
        spec.log_file,
        spec.log_lines,
        tally=tally(lines),
        last_errors=tuple(shown(line) for line in errors[-LAST_LINES:]),
        last_lines=tuple(shown(line) for line in text.lines[-LAST_LINES:]),
        cut=text.cut,
    )


def _disk(role: str, section: Sequence[str] | None) -> Disk:
    if not section:
        return Disk(role, "?", problem="the host did not say")
    path = section[0].strip()
    try:
        total, used, available = df_kib(section[1:])
    except ValueError:
        return Disk(role, path, problem=f"df failed: {' '.join(section[1:])[:200]}")
    percent = used / (used + available) * 100 if used + available else 0.0
    return Disk(role, path, percent, used * 1024, total * 1024)


def _memory(section: Sequence[str] | None) -> Memory | None:
    try:
        total, available = meminfo_bytes(section or ())
    except (KeyError, ValueError, IndexError):
        return None
    return Memory((total - available) / total * 100, total - available, total)


def _load(section: Sequence[str] | None) -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = (float(x) for x in (section or [""])[0].split()[:3])
    except ValueError:
        return None
    return one, five, fifteen


def _cpus(section: Sequence[str] | None) -> int | None:
    text = (section or [""])[0].strip()
    return int(text) if text.isdigit() and int(text) > 0 else None
