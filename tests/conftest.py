"""Shared fixtures: the real bot as a subprocess, the Slack fake, demo services, configs.

Everything talks over real loopback HTTP. Waiting is for conditions (a port answering, a call
reaching the fake), never for a fixed time.

EVENTMESH_TEST_DATABASE=postgres runs the bots on PostgreSQL (a new database on the machine's
server for each bot started without a database_url, dropped at the end of the session);
unset, or sqlite, on a SQLite file in the bot's working directory. scripts/test runs both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.support import postgres
from tests.support.conversation import Conversation
from tests.support.slack_fake import SlackFake
from tests.support.slack_signing import block_actions_body, signed_headers, slash_command_body
from tests.support.sshd import Sshd, start_sshd
from tests.support.sshd import missing_reason as sshd_missing_reason

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "tests" / "fixtures" / "eventmesh.example.yml"
SIGNING_SECRET = "test-signing-secret-8f1d2c3b4a"
BOT_TOKEN = "xoxb-test-token"
STARTUP_TIMEOUT_S = 30.0
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_DATABASE = os.environ.get("EVENTMESH_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if TEST_DATABASE not in ("sqlite", "postgres"):
    raise RuntimeError(f"EVENTMESH_TEST_DATABASE={TEST_DATABASE!r}: use sqlite or postgres")
_made_databases: list[str] = []  # this worker's, dropped when its session ends
# Which test modules start a bot on the run's database (EVENTMESH_TEST_DATABASE matters to
# them and to nothing else). scripts/test has the SQLite run write them to this file, and the
# PostgreSQL run then runs only those: the rest would run the same thing a second time.
BOT_DATABASE_MODULES = os.environ.get("EVENTMESH_TEST_BOT_DATABASE_MODULES", "")
_current_module = ""  # the module of the test being set up or run (this worker's)


def pytest_runtest_setup(item: pytest.Item) -> None:
    global _current_module
    _current_module = item.nodeid.split("::", 1)[0]


# The modules that take longest, longest first (seconds of test time on 4 workers sharing 2
# cores, measured on the SQLite run). With --dist loadfile each module runs on one worker;
# xdist's own order (most tests first) sent these few-but-long modules out last, and the run
# then waited minutes on one or two workers at the end. They go first instead, the rest after
# them with the most tests first, as xdist would.
LONGEST_MODULES = [
    "tests/test_kill_points.py",  # 338 s, 11 tests
    "tests/test_replicas.py",  # 256 s, 4 tests (one of 197 s)
    "tests/test_escalate_e2e.py",  # 170 s
    "tests/test_deploy_e2e.py",  # 167 s
    "tests/test_delivery_faults.py",  # 142 s, 3 tests
    "tests/test_deploy_runbook.py",  # 140 s
    "tests/test_rollback_e2e.py",  # 127 s
    "tests/test_console.py",  # 126 s
    "tests/test_delivery_faults_connections.py",  # 119 s, 3 tests
    "tests/test_cli.py",  # 102 s
    "tests/test_diagnose_e2e.py",  # 83 s
    "tests/test_alerts_e2e.py",  # 77 s, 3 tests
    "tests/test_deploy_ssh.py",  # 71 s, 5 tests
]


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # xdist's: the order comes from below
        config.option.loadscopereorder = False


def _longest_first(items: list[pytest.Item]) -> None:
    """Modules in LONGEST_MODULES order, then by number of tests; each module's own order."""
    modules: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        modules[module] = modules.get(module, 0) + 1
    rank = {module: n for n, module in enumerate(LONGEST_MODULES)}
    order = {
        module: n
        for n, module in enumerate(
            sorted(modules, key=lambda m: (rank.get(m, len(rank)), -modules[m]))
        )
    }
    items.sort(key=lambda item: order[item.nodeid.split("::", 1)[0]])  # stable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _longest_first(items)
    if TEST_DATABASE != "postgres" or not BOT_DATABASE_MODULES:
        return
    recorded = Path(BOT_DATABASE_MODULES)
    if not recorded.exists():
        return  # no SQLite run before this one: run everything
    modules = set(recorded.read_text().split())
    # A session-wide bot (running_bot) is started by whichever module needs it first.
    keep = [
        item
        for item in items
        if item.nodeid.split("::", 1)[0] in modules
        or "running_bot" in getattr(item, "fixturenames", ())
    ]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def bot_database_url(workdir: Path) -> str:
    """Where a bot started without a database_url keeps its store, in this run's database."""
    if BOT_DATABASE_MODULES and TEST_DATABASE == "sqlite" and _current_module:
        with open(BOT_DATABASE_MODULES, "a") as modules:  # one short line: appends stay whole
            modules.write(_current_module + "\n")
    if TEST_DATABASE == "postgres":
        url = postgres.create_database("bot")
        _made_databases.append(url)
        return url
    return f"sqlite:///{workdir / 'bot.db'}"


@pytest.fixture(scope="session", autouse=True)
def _drop_made_databases() -> Iterator[None]:
    # Session-wide and autouse: set up first, so torn down after every bot has stopped.
    yield
    for url in _made_databases:
        postgres.drop_database(url)


TEST_LIMITS = {
    "commands": {"count": 100_000, "per": "1m"},
    "escalations": {"count": 100_000, "per": "1m"},
    "watches_per_user": 50,
    "ssh_per_environment": 20,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment minus anything that would steer the bot."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "EVENTMESH_")) and k not in ("PORT", "HOST", "LOG_LEVEL")
    }
    env.update(extra)
    return env


PORT_ATTEMPTS = 3


class PortTaken(AssertionError):
    """The process could not listen on the port it was given: another took it first."""


def listens_on(pid: int, port: int) -> bool:
    """Whether the process (or one of its children) listens on the loopback port."""
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for member in family
            for conn in member.net_connections(kind="tcp")
        )
    except psutil.Error:
        return False


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until url answers from this process.

    free_port() only says a port was free a moment ago: the test workers start hundreds of
    servers, and another may take the port first. Its answers must not pass for this
    process's (a test would then talk to another test's bot): the port must be this
    process's own listening socket.
    """
    port = urlsplit(url).port
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            if "cannot listen on" in text:
                raise PortTaken(f"port {port} was taken by another process:\n{text}")
            raise AssertionError(f"process exited with {process.returncode}:\n{text}")
        try:
            if httpx.get(url, timeout=1).status_code == 200 and (
                port is None or listens_on(process.pid, port)
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # readiness polling: waiting for the port to answer, not for time
    raise AssertionError(f"{url} did not answer within {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")


def stop_process(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def serving_or_stopped(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until url answers; a process that never does is stopped, not left behind."""
    try:
        wait_until_serving(url, process, log)
    except BaseException:
        stop_process(process)
        raise


@dataclass
class DemoService:
    url: str
    process: subprocess.Popen[bytes]

    def set_faults(self, **faults: Any) -> None:
        response = httpx.post(f"{self.url}/admin/faults", json=faults, timeout=5)
        response.raise_for_status()

    def reset(self) -> None:
        httpx.delete(f"{self.url}/admin/faults", timeout=5).raise_for_status()
        httpx.delete(f"{self.url}/admin/requests", timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/admin/requests", timeout=5).json()


def start_demo(tmp: Path, name: str) -> DemoService:
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        log = tmp / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "demo-service", "--port", str(port)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            serving_or_stopped(f"{url}/healthz", process, log)
        except PortTaken:
            if attempt == PORT_ATTEMPTS - 1:
                raise
            continue
        return DemoService(url, process)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def demo_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoService, ...]]:
    """Two demo EventMesh services: A serves local and staging, B serves dev."""
    tmp = tmp_path_factory.mktemp("demo")
    services = (start_demo(tmp, "demo-a"), start_demo(tmp, "demo-b"))
    yield services
    for service in services:
        stop_process(service.process)


@pytest.fixture
def demo(demo_services: tuple[DemoService, ...]) -> Iterator[DemoService]:
    """Demo service A with no faults and an empty request log, restored afterwards."""
    for service in demo_services:
        service.reset()
    yield demo_services[0]
    for service in demo_services:
        service.reset()


@pytest.fixture
def demo_b(demo: DemoService, demo_services: tuple[DemoService, ...]) -> DemoService:
    return demo_services[1]


def write_config(
    path: Path, environments: dict[str, str], *, check_interval: str = "30s", **sections: Any
) -> Path:
    """A config like the example, with each environment pointed at a loopback URL.

    `sections` adds or replaces top-level sections (e.g. metrics={"dir": ...}). The scheduled
    checks are off unless `alerts` is given: their requests would land in the demo services'
    request logs that tests count, and their alerts in the Slack fake. The per-user limits
    are a robot's (TEST_LIMITS) unless `limits` is given: one test user sends hundreds of
    commands a minute across a test file.
    """
    envs = {}
    for name, url in environments.items():
        env: dict[str, Any] = {"base_url": url, "check_interval": check_interval}
        if name == "local":
            env["transport"] = "local"
        else:
            env["hosts"] = ["deploy@127.0.0.1:1"]
        if name == "production":
            env["requires_approval"] = True
        envs[name] = env
    config = {
        "slack": {"alerts_channel": "C0ALERTS", "approvals_channel": "C0APPROVALS"},
        "access": {"deployers": ["U0DEPLOY1"], "approvers": ["U0APPROVER1"]},
        "environments": envs,
        "alerts": {"scheduled_checks": False},
        "limits": TEST_LIMITS,
        **sections,
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def dead_url() -> str:
    """A loopback URL where nothing listens: connection refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def bot_config(
    tmp_path_factory: pytest.TempPathFactory,
    demo_services: tuple[DemoService, ...],
    dead_url: str,
) -> Path:
    a, b = demo_services
    return write_config(
        tmp_path_factory.mktemp("config") / "eventmesh.yml",
        {"local": a.url, "dev": b.url, "staging": a.url, "production": dead_url},
    )


def spawn_bot(workdir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`eventmesh-bot run` in workdir, on a free PORT, with its store under workdir.

    `env` adds to (and overrides) those defaults; returns at once (start_bot waits for it).
    """
    port = free_port()
    log = workdir / "bot.log"
    defaults = {"PORT": str(port), "LOG_LEVEL": "INFO", "EVENTMESH_DATA_DIR": str(workdir)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=clean_env(**{**defaults, **env}),
        )
    return process, f"http://127.0.0.1:{port}", log


def start_bot(workdir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """spawn_bot, returning once GET /healthz answers (on another free port if another
    process took the first one, unless env sets PORT)."""
    attempts = 1 if "PORT" in env else PORT_ATTEMPTS
    for attempt in range(attempts):
        process, url, log = spawn_bot(workdir, **env)
        try:
            serving_or_stopped(f"{url}/healthz", process, log)
        except PortTaken:
            if attempt == attempts - 1:
                raise
            continue
        return process, url, log
    raise AssertionError("unreachable")


@dataclass
class Sent:
    response: httpx.Response
    seconds: float
    channel: str
    response_url: str  # where the bot's later private answers to this request go


@dataclass
class BotProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    database_url: str
    slack: SlackFake
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def post_signed(self, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.http.post(f"{self.url}/slack/events", content=body, headers=headers)
        return response, time.perf_counter() - started

    def command(
        self,
        command: str,
        text: str,
        *,
        user_id: str = "U0USER",
        channel: str | None = None,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
    ) -> Sent:
        """Send a slash command exactly as Slack would, in its own channel unless given one."""
        channel = channel or new_channel()
        response_url = self.slack.response_url()
        body = slash_command_body(
            command,
            text,
            user_id=user_id,
            channel_id=channel,
            response_url=response_url,
        )
        response, seconds = self.post_signed(body, signed_headers(secret, body, timestamp))
        return Sent(response, seconds, channel, response_url)

    def press(
        self,
        action_id: str,
        value: str,
        *,
        channel: str,
        message_ts: str,
        user_id: str = "U0USER",
        block_id: str = "b1",
        selected_options: list[dict[str, Any]] | None = None,
    ) -> Sent:
        """Click a button exactly as Slack delivers it (block_id: the button's actions block);
        with selected_options, a checkboxes element (what is selected after the click)."""
        response_url = self.slack.response_url()
        body = block_actions_body(
            action_id,
            value,
            user_id=user_id,
            channel_id=channel,
            message_ts=message_ts,
            response_url=response_url,
            block_id=block_id,
            selected_options=selected_options,
        )
        response, seconds = self.post_signed(body, signed_headers(SIGNING_SECRET, body))
        return Sent(response, seconds, channel, response_url)

    def metrics(self) -> str:
        return self.http.get(f"{self.url}/metrics").text


def new_channel() -> str:
    return "C" + uuid.uuid4().hex[:10].upper()


@pytest.fixture(scope="session")
def slack() -> Iterator[SlackFake]:
    with SlackFake(bot_token=BOT_TOKEN) as fake:
        yield fake


def start_slack_bot(
    workdir: Path, slack: SlackFake, config: Path, database_url: str | None = None, **env: str
) -> BotProcess:
    """The real bot in HTTP mode with this config, talking to the Slack fake.

    Its store is a SQLite file in workdir unless database_url names another (a restarted
    bot gets the same database_url and a fresh workdir for its log). `env` adds variables
    (e.g. LOG_LEVEL="DEBUG").
    """
    database_url = database_url or bot_database_url(workdir)
    process, url, log = start_bot(workdir, **slack_bot_env(slack, config, database_url), **env)
    return BotProcess(url, process, log, database_url, slack)


def slack_bot_env(slack: SlackFake, config: Path, database_url: str) -> dict[str, str]:
    """The variables of a bot in HTTP mode talking to the Slack fake."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "EVENTMESH_CONFIG": str(config),
        "EVENTMESH_DATABASE_URL": database_url,
    }


@contextlib.contextmanager
def http_bot(tmp: Path, slack: SlackFake, config: Path, **env: str) -> Iterator[BotProcess]:
    """start_slack_bot for the length of a with-block; it must exit 0 on SIGTERM."""
    bot = start_slack_bot(tmp, slack, config, **env)
    try:
        yield bot
    except BaseException:
        # A failed test stops its bot too: one left running would go on posting and checking.
        bot.http.close()
        stop_process(bot.process)
        raise
    bot.http.close()
    code = stop_process(bot.process)
    assert code == 0, f"the bot exited with {code} on SIGTERM:\n{bot.log.read_text()}"


@pytest.fixture(scope="session")
def running_bot(
    tmp_path_factory: pytest.TempPathFactory, slack: SlackFake, bot_config: Path
) -> Iterator[BotProcess]:
    """The real bot, in HTTP mode on uvicorn, talking to the Slack fake."""
    with http_bot(tmp_path_factory.mktemp("bot"), slack, bot_config) as bot:
        yield bot


@pytest.fixture
def bot(running_bot: BotProcess, demo: DemoService) -> BotProcess:
    """The running bot, with healthy demo services."""
    return running_bot


@pytest.fixture
def chat(bot: BotProcess) -> Conversation:
    """Commands and clicks to this test's `bot`, read like the conversation (conversation.py)."""
    return Conversation(bot)


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A throwaway schema in the local PostgreSQL, so runs never see each other's rows."""
    engine = create_engine(POSTGRES_URL)
    schema = f"store_test_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.orig}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty database on the local PostgreSQL, dropped after the test."""
    reason = postgres.unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database("test")
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database: a SQLite file, then the local PostgreSQL (same tests on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'bot.db'}"
    return str(request.getfixturevalue("postgres_schema"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH sshd on a loopback port (see tests/support/sshd.py), for the session."""
    reason = sshd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
