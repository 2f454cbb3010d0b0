"""One running bot: the store, the workers, the chat, and the mode's front door, in one loop.

Every mode serves GET /healthz, /readyz and /metrics. The process's signals belong here: SIGINT
and SIGTERM stop the front door first, then let running work finish briefly.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from starlette.types import ASGIApp

from bot import __version__
from bot.config import Config
from bot.demo.local_env import (
    LocalServiceError,
    console_config,
    start_local_service,
    stop_local_service,
    supervised,
)
from bot.runbook.alerts.checking import CheckingLease
from bot.runbook.health.health import HealthChecker
from bot.runbook.health.probe import Prober
from bot.runbook.setup.problems import RECHECK_EVERY, SetupProblems, check_this_machine
from bot.scheduler import Scheduler
from bot.settings import SECRETS, Mode, Settings
from bot.slack.bolt_app import (
    AsyncApp,
    BotIdentity,
    create_bolt_app,
    know_identity,
    socket_mode_handler,
)
from bot.slack.changes.approved import sweep_changes
from bot.slack.changes.recovery import RECOVERY_EVERY, recover_interrupted
from bot.slack.chat import Chat
from bot.slack.console import Console, ConsoleChat
from bot.slack.dispatch import ActionSpec, CommandSpec, Dispatcher, EventSpec, TimerSpec
from bot.slack.readiness import Readiness, periodic
from bot.slack.services import Services
from bot.slack.setup.names import resolve_names
from bot.slack.web import create_web_app
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import Store
from bot.store_watch import WATCH_EVERY, StoreWatch
from bot.telemetry import Telemetry
from bot.transport.local import LocalTransport
from bot.webserver import EmbeddedServer, bind, bind_preferring, bound_port, embedded_server
from bot.workers import WorkerPool

log = logging.getLogger(__name__)

RESET = -1  # run_bot's answer when the console asked to start afresh (/reset)
SETTLE_MAX = timedelta(minutes=5)


@dataclass
class RunningServer:
    server: EmbeddedServer
    task: asyncio.Task[None]
    url: str


def _start_server(app: ASGIApp, sock: socket.socket, host: str) -> RunningServer:
    server = embedded_server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return RunningServer(server, task, f"http://{host}:{bound_port(sock)}")


async def _stop_servers(servers: Sequence[RunningServer]) -> None:
    for running in servers:
        running.server.should_exit = True
    await asyncio.gather(*(r.task for r in servers), return_exceptions=True)


async def _first(work: Awaitable[object], stop: Awaitable[object]) -> bool:
    """Run work until it finishes (True) or stop comes first (False, work is cancelled)."""
    work_task, stop_task = asyncio.ensure_future(work), asyncio.ensure_future(stop)
    await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in (work_task, stop_task):
        task.cancel()
    if work_task.done() and not work_task.cancelled():
        work_task.result()
        return True
    return False


async def run_bot(
    settings: Settings,
    config: Config,
    mode: Mode,
    commands: Sequence[CommandSpec],
    actions: Sequence[ActionSpec],
    timers: Sequence[TimerSpec] = (),
    events: Sequence[EventSpec] = (),
) -> int:
    # What is loaded by now (modules, the config) lives as long as the process. Out of the
    # collector's sight, a full collection takes a few ms instead of 40-100 ms that every ack
    # and every probe in flight would wait (measured during 200-environment checks).
    gc.freeze()
    # A young collection every 20,000 allocations, not 700: with the default, a /health all
    # over 1,000 environments ran ~250 young and ~20 middle collections, 0.2-0.45 s of the
    # bot's ~1 s of CPU for it (gc.callbacks); with this, 3-4 of them, 40-85 ms in all.
    gc.set_threshold(20_000, 10, 10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    prefer_own_python()
    telemetry = Telemetry()
    store = Store(settings.database_url)
    workers = WorkerPool()
    store_watch = StoreWatch(store, telemetry)
    async with AsyncExitStack() as cleanup:
        # Unwound in reverse: servers stop taking requests, then running work gets its grace.
        cleanup.callback(store.close)
        # Health probes run on their own thread and loop: a fan-out never delays an ack here.
        prober = cleanup.enter_context(Prober())
        http = await cleanup.enter_async_context(httpx.AsyncClient(follow_redirects=False))
        # What must outlive running work (the local demo service a deploy restarts) unwinds
        # after the workers have had their grace.
        after_work = await cleanup.enter_async_context(AsyncExitStack())
        workers.start()
        cleanup.push_async_callback(workers.stop)
        bot = _Bot(
            settings,
            mode,
            _Handlers(commands, actions, timers, events),
            store,
            telemetry,
            workers,
            Scheduler(store),
            prober,
            http,
            store_watch,
            Readiness(telemetry, store_watch, config.slack.ready_grace),
            cleanup,
            after_work,
            stop,
        )
        cleanup.push_async_callback(_stop_servers, bot.servers)
        if mode == "console":
            return await bot.run_console(config)
        return await bot.run_slack(config)


@dataclass(frozen=True)
class _Handlers:
    commands: Sequence[CommandSpec]
    actions: Sequence[ActionSpec]
    timers: Sequence[TimerSpec]
    events: Sequence[EventSpec]


@dataclass
class _Bot:
    """One running bot's parts, shared by its front doors (the console, Slack)."""

    settings: Settings
    mode: Mode
    handlers: _Handlers
    store: Store
    telemetry: Telemetry
    workers: WorkerPool
    scheduler: Scheduler
    prober: Prober
    http: httpx.AsyncClient
    store_watch: StoreWatch
    readiness: Readiness
    cleanup: AsyncExitStack
    after_work: AsyncExitStack
    stop: asyncio.Event
    servers: list[RunningServer] = field(default_factory=list)
    watching: list[str] = field(default_factory=list)  # for the start-up line
    # Asked for once this bot serves: a replica that cannot talk to Slack never checks.
    checking: list[CheckingLease] = field(default_factory=list)
    started: list[Callable[[], object]] = field(default_factory=list)  # once the door is up

    def start_services(self, config: Config, chat: Chat) -> Dispatcher:
        """Wire the services to this mode's chat; requests go to the dispatcher it returns."""
        checker = HealthChecker(
            self.prober, config.thresholds, self.store, self.telemetry, metrics=config.metrics
        )
        # The console's shipped config cannot reach its hosts by design: said quietly.
        quiet = self.mode == "console" and not self.settings.config_was_set
        services = Services(
            config,
            self.store,
            chat,
            checker,
            self.telemetry,
            self.workers,
            self.scheduler,
            self.http,
            paced=self.mode != "console",
            data_dir=self.settings.data_dir.resolve(),
            setup=SetupProblems(logging.INFO if quiet else logging.WARNING),
        )
        for spec in self.handlers.timers:
            self.scheduler.on(spec.kind, functools.partial(spec.handler, services))
        self.watching.append(
            _schedule_checks(config, self.scheduler, services, self.cleanup, self.checking)
        )
        # Whatever waits in the outbox (left by a previous run too) goes as Slack allows.
        services.outbox.start()
        # The outbox outlives the running work: what a job says in its grace period (a
        # watch's summary, a deploy's last step) still goes; what waits after stays there.
        self.after_work.push_async_callback(services.outbox.close)
        # Unwound in reverse: no more ticks or timers, then the checks under way end and
        # the kept SSH connections close.
        self.cleanup.push_async_callback(services.home.close)
        self.cleanup.push_async_callback(services.monitor.close)
        self._schedule_upkeep(config, services)
        # Timers left by a previous run fire as soon as there is a chat to report to.
        self.scheduler.start()
        self.cleanup.push_async_callback(self.scheduler.stop)
        # Unwound before the workers' grace period: watches end now, each with its summary.
        self.cleanup.callback(services.watches.stop_all)
        h = self.handlers
        return Dispatcher(services, h.commands, h.actions, h.events)

    def _schedule_upkeep(self, config: Config, services: Services) -> None:
        """The periodic jobs that keep the bot honest: recovery, sweeps, readiness, setup."""
        scheduler = self.scheduler
        # Deployments a crashed bot left 'running': interrupted, said so, lock freed.
        scheduler.every(
            "recover-interrupted", RECOVERY_EVERY, functools.partial(recover_interrupted, services)
        )
        # Builds a killed bot left running, and approved changes it never started.
        scheduler.every("changes-sweep", RECOVERY_EVERY, functools.partial(sweep_changes, services))
        self.readiness.web_api = services.outbox.health
        # Readiness is read when asked (/readyz, /metrics) and here, so that its changes
        # are logged when they happen.
        scheduler.every(
            "store-watch", WATCH_EVERY, periodic(self.store_watch.check, self.readiness.check)
        )
        # Setup problems named at start (one log line each, one message in the alerts
        # channel), and checked again now and then so that a fix shows.
        # (After the start is known to go on: a token Slack refuses is the one line then.)
        this_machine = functools.partial(check_this_machine, config, services.setup, SECRETS)

        def check_setup() -> None:
            this_machine()
            scheduler.every("setup-this-machine", RECHECK_EVERY, _async(this_machine))

        self.started.append(check_setup)
        # Once the checks have had two rounds to find what they find: a message an
        # earlier run left is brought up to date even if nothing changed since start.
        settle = 2 * max(env.check_interval for env in config.environments.values())
        asyncio.get_running_loop().call_later(
            min(settle, SETTLE_MAX).total_seconds(), services.setup_notice.refresh
        )
        self.cleanup.push_async_callback(services.setup_notice.close)

    def _serving(self) -> None:
        """The front door is up: the setup checks and the scheduled checks begin."""
        for then in self.started:
            then()
        for lease in self.checking:
            lease.start()

    async def run_console(self, config: Config) -> int:
        settings = self.settings
        config = console_config(
            config, settings.data_dir / "local", shipped=not settings.config_was_set
        )
        config, local_line = await _start_local_service(config, self.http, self.after_work)
        console_chat = ConsoleChat(
            files_dir=settings.data_dir / "files", summarized=config.slack.alerts_channel
        )
        dispatcher = self.start_services(config, console_chat)
        web = _start_server(
            create_web_app(self.telemetry, self.mode, self.readiness),
            _bind_web(settings, self.mode),
            settings.host,
        )
        self.servers.append(web)
        print(
            f"EventMesh ChatOps {__version__} — local console (no Slack tokens set)\n"
            f"  {local_line}\n"
            f"  bot health and metrics: {web.url}/healthz  {web.url}/metrics\n"
            f"  config: {settings.config_path}; state: {settings.data_dir} "
            "(./scripts/run --reset or /reset starts afresh)\n"
            f"  {self.watching[0]}; one line per round of alert changes, /alerts shows them",
            flush=True,
        )
        self._serving()
        console = Console(dispatcher, console_chat, self.workers)
        if not await _first(console.run(), self.stop.wait()):
            sys.stdout.write("\n")  # stopped by a signal: end the prompt's line
        return RESET if console.reset_asked else 0

    async def run_slack(self, config: Config) -> int:
        settings, mode = self.settings, self.mode
        # Names in the config become ids once, here, before anything serves or is scheduled.
        client = create_web_client(settings.bot_token or "", settings.api_url)
        config = await resolve_names(config, client, self.store)
        bolt_app, identity = _slack_app(settings, mode, config, self.start_services)
        web_app = create_web_app(
            self.telemetry, mode, self.readiness, bolt_app if mode == "http" else None
        )
        web = _start_server(web_app, _bind_web(settings, mode), settings.host)
        self.servers.append(web)
        learning = await know_identity(
            client, identity, settings.app_token if mode == "socket" else None
        )
        if learning is not None:
            self.cleanup.callback(learning.cancel)
        if mode == "socket":
            handler = socket_mode_handler(bolt_app, settings.app_token or "")
            self.readiness.watch_socket(handler.client)
            self.cleanup.push_async_callback(handler.close_async)
            # While Slack is unreachable the client retries forever: a stop must still work.
            if not await _first(handler.connect_async(), self.stop.wait()):
                return 0
        log.info(
            "serving Slack in %s mode; health and metrics on %s; %s",
            mode,
            web.url,
            _schema_words(self.store),
        )
        self._serving()
        await self.stop.wait()
        log.info("stopping: no new requests; letting running work finish")
        return 0


def _async(work: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        work()

    return job


def _slack_app(
    settings: Settings,
    mode: Mode,
    config: Config,
    start_services: Callable[[Config, Chat], Dispatcher],
) -> tuple[AsyncApp, BotIdentity]:
    """The services on Slack's Web API, and the Bolt app in front of them; returns the app
    and the identity requests are authorized with.

    Start-up checks ride out Slack's trouble by themselves; the outbox's client makes one try
    per call (it looks before it sends a lost post again); Bolt's carries no token (each
    request gets the one the identity authorizes with)."""
    token = settings.bot_token or ""
    dispatcher = start_services(
        config, SlackChat(create_web_client(token, settings.api_url, retries=False))
    )
    identity = BotIdentity(token)
    bolt_app = create_bolt_app(
        dispatcher,
        client=create_web_client(None, settings.api_url),
        signing_secret=settings.signing_secret,
        identity=identity,
    )
    return bolt_app, identity


def _schema_words(store: Store) -> str:
    done = store.schema
    if done.changed:
        return f"store schema upgraded from {done.before or 'nothing'} to {done.after}"
    return f"store schema at {done.after}"


def _schedule_checks(
    config: Config,
    scheduler: Scheduler,
    services: Services,
    cleanup: AsyncExitStack,
    checking: list[CheckingLease],
) -> str:
    """The scheduled checks behind the threshold alerts, two jobs per check_interval, run
    while this replica holds the checking lease; returns what they watch, in words."""
    if not config.alerts.scheduled_checks:
        return "scheduled checks off (alerts.scheduled_checks: false)"
    lease = CheckingLease(
        services.store, scheduler, services.monitor, services.alerts, services.telemetry
    )
    checking.append(lease)
    # A clean stop gives the lease up: the next replica takes over at once.
    cleanup.push_async_callback(lease.release)
    intervals = sorted({env.check_interval for env in config.environments.values()})
    every = ", ".join(f"{i.total_seconds():g}s" for i in intervals)
    return f"scheduled checks of {len(config.environments)} environment(s) every {every}"


async def _start_local_service(
    config: Config, http: httpx.AsyncClient, cleanup: AsyncExitStack
) -> tuple[Config, str]:
    """The embedded default: run 'local's demo service from its installed release.

    Only when 'local' is managed by the demo supervisor (config/eventmesh.yml); with another
    config the console leaves 'local' as configured. Returns the config (base_url pointed at
    the service) and the line the banner shows.
    """
    env = config.environments.get("local")
    if env is None or env.transport != "local" or supervised(env) is None:
        where = f"environment 'local' → {env.base_url}" if env else "no 'local' environment"
        return config, where
    host = LocalTransport(
        command_timeout_s=config.ssh.command_timeout.total_seconds(), environment=env.deploy.env
    )
    cleanup.push_async_callback(host.close)
    try:
        url = await start_local_service(env, host, http)
    except LocalServiceError as exc:
        log.warning("the local demo service did not start: %s", exc)
        return config, f"local demo service NOT running: {exc}"
    cleanup.push_async_callback(stop_local_service, env, host)
    install_dir = env.deploy.install_dir
    return (
        config.with_base_url("local", url),
        f"demo EventMesh service: {url}, run from {install_dir}/current "
        "(environment 'local'; /deploy local installs new releases)",
    )


def prefer_own_python() -> None:
    """Put this interpreter's bin directory first on PATH, for the commands in the config.

    The embedded default's build and restart commands run `python -m bot.demo…`: they must
    find the bot's own Python (a virtualenv's), not whatever `python` the shell has.
    """
    own = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[:1] != [own]:
        os.environ["PATH"] = os.pathsep.join([own, path]) if path else own


def _bind_web(settings: Settings, mode: Mode) -> socket.socket:
    # The console is for trying things out: a busy default port is not worth failing over.
    if mode == "console" and not settings.port_was_set:
        return bind_preferring(settings.host, settings.port)
    return bind(settings.host, settings.port)
