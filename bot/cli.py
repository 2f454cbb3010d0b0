"""eventmesh-bot: run the bot, check a config, upgrade the database, or run the demo service.

This is the composition root: the one module that knows the handlers and the runtime both,
so it imports from handlers/ while nothing else in bot/ does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot import __version__

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.config import Config
    from bot.settings import Settings

# The rest is imported where it is used: `demo-service` (every deployed demo release runs one,
# and the tests start hundreds) needs neither SQLAlchemy nor the config, the settings or the
# Slack libraries — with them at the top its start cost 1.3 s of CPU instead of 0.2 s.

log = logging.getLogger("eventmesh-bot")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventmesh-bot",
        description="Slack ChatOps bot for the EventMesh operations runbook.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run",
        help="run the bot (the default); the mode follows the Slack variables that are set",
    )
    for p in (parser, run):
        p.add_argument(
            "--mode",
            choices=["socket", "http", "console"],
            help="force a run mode instead of choosing it from the environment",
        )
        p.add_argument(
            "--reset",
            action="store_true",
            help="console only: start the demo afresh (its store, releases and files go)",
        )
    check = sub.add_parser("check-config", help="validate a config file: exit 0, or 2 and why")
    check.add_argument("path", nargs="?", help="config file (default: $EVENTMESH_CONFIG)")
    check.add_argument(
        "--live",
        action="store_true",
        help="also ask Slack, the hosts, the services and CI whether the config works",
    )
    db = sub.add_parser("db", help="the store's database ($EVENTMESH_DATABASE_URL)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser(
        "upgrade",
        help="apply the schema migrations (a start does it too, under the same lock)",
    )
    demo = sub.add_parser("demo-service", help="run the simulated EventMesh service")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--version", dest="service_version", default="0.1.0")
    demo.add_argument(
        "--unhealthy",
        action="store_true",
        help="start with a critical component down (healthz 503), as a broken release would",
    )
    demo.add_argument("--log-file", type=Path, help="write its log here, in the runbook's format")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.path, live=args.live)
    if args.command == "db":
        return _db_upgrade()
    if args.command == "demo-service":
        from bot.demo.service import run_demo_service
        from bot.webserver import PortInUse

        try:
            return run_demo_service(
                args.host,
                args.port,
                args.service_version,
                broken=args.unhealthy,
                log_file=args.log_file,
            )
        except PortInUse as exc:
            print(f"eventmesh-bot demo-service: {exc} (choose another --port)", file=sys.stderr)
            return EXIT_USAGE
    return _run(args.mode, reset=args.reset)


def _check_config(path: str | None, *, live: bool = False) -> int:
    from bot.config import check_config
    from bot.settings import Settings

    target = Path(path) if path else Settings.from_env().config_path
    ok, lines = check_config(target)
    print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    if not ok:
        return EXIT_USAGE
    return _check_live(target) if live else 0


def _check_live(path: Path) -> int:
    """What checked out on stdout; one line per problem on stderr (exit 2 if any)."""
    from bot.config import load_config
    from bot.settings import Settings, SettingsError
    from bot.slack.setup.live import check_live  # the Slack libraries, only when asked

    # The problem lines are the output: the transports' own log lines would repeat them.
    logging.basicConfig(handlers=[logging.NullHandler()])
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"eventmesh-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = asyncio.run(check_live(load_config(path), settings))
    for line in report.found:
        print(line)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem(s) to fix; run check-config --live again after.")
        return EXIT_USAGE
    print("all good: Slack, hosts, services and CI answer as the config expects")
    return 0


def _db_upgrade() -> int:
    """`eventmesh-bot db upgrade`: the schema to this bot's version; exit 0, or 2 and why."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bot.logs import configure_logging
    from bot.settings import Settings, SettingsError
    from bot.store import Store
    from bot.store.schema import SchemaError

    configure_logging("WARNING", ())
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"eventmesh-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = make_url(settings.database_url).render_as_string(hide_password=True)
    try:
        store = Store(settings.database_url)
    except SchemaError as exc:
        print(f"eventmesh-bot db upgrade: {url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SQLAlchemyError as exc:
        print(_unreachable(url, exc), file=sys.stderr)
        return EXIT_USAGE
    store.close()
    done = store.schema
    if done.changed:
        print(f"{url}: schema upgraded from {done.before or 'nothing'} to {done.after}")
    else:
        print(f"{url}: schema already at {done.after}, nothing to do")
    return 0


def _unreachable(url: str, exc: SQLAlchemyError) -> str:
    detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return f"cannot open the store at {url}: {detail} — check EVENTMESH_DATABASE_URL"


def _run(forced_mode: str | None, *, reset: bool = False) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bot.config import ConfigError, load_config
    from bot.logs import configure_logging
    from bot.settings import Settings, SettingsError, make_non_dumpable
    from bot.slack.bolt_app import SlackRefused
    from bot.store.schema import SchemaError
    from bot.webserver import PortInUse

    try:
        settings = Settings.from_env()
        interactive = sys.stdin is not None and sys.stdin.isatty()
        mode = settings.mode(forced_mode, interactive=interactive)  # type: ignore[arg-type]
    except SettingsError as exc:
        print(f"eventmesh-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if mode == "console":
        settings = settings.for_console()
    elif reset:
        print(
            "eventmesh-bot: --reset starts the console's demo afresh; with Slack tokens set "
            "there is no demo to reset (the bot's store is left alone)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # The console shares the terminal with a person typing: only warnings and errors go there.
    level = (
        "WARNING"
        if mode == "console" and settings.log_level in ("DEBUG", "INFO")
        else settings.log_level
    )
    configure_logging(level, settings.secrets())
    make_non_dumpable()
    try:
        config = load_config(settings.config_path)
    except ConfigError as exc:
        # Every problem, one line each, as check-config lists them: fixing one at a time and
        # restarting to find the next is what a new operator should not have to do.
        for problem in exc.errors:
            log.error("config %s: %s", settings.config_path, problem)
        return EXIT_USAGE
    try:
        _keep_secrets(config)
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_USAGE

    # Imported here so check-config and demo-service start fast and need no Slack libraries.
    from bot.runtime import RESET, run_bot
    from handlers import ACTIONS, COMMANDS, EVENTS, TIMERS

    try:
        while True:
            if reset:
                reset_console_state(settings)
            code = asyncio.run(run_bot(settings, config, mode, COMMANDS, ACTIONS, TIMERS, EVENTS))
            if code != RESET:
                return code
            reset = True
    except ConfigError as exc:  # a name in the config that Slack does not know
        for problem in exc.errors:
            log.error("config %s: %s", settings.config_path, problem)
    except PortInUse as exc:
        log.error("%s — set PORT (and HOST) to a free address", exc)
    except SlackRefused as exc:
        log.error("%s", exc)
    except SQLAlchemyError as exc:
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        log.error(
            "cannot open the store at %s: %s — check EVENTMESH_DATABASE_URL",
            url,
            type(exc).__name__,
        )
    except SchemaError as exc:
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        log.error("cannot use the store at %s: %s", url, exc)
    return EXIT_USAGE


def reset_console_state(settings: Settings) -> None:
    """The console's state gone: its store (a SQLite file), the demo's releases, service state
    and log, saved files. Nothing else in the data directory is touched."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    # A store named by EVENTMESH_DATABASE_URL may be a bot's on Slack: never deleted here.
    if not settings.database_url_was_set and url.get_backend_name() == "sqlite" and url.database:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(url.database + suffix).unlink(missing_ok=True)
    else:
        log.warning("--reset: the store EVENTMESH_DATABASE_URL names is kept (not the console's)")
    for name in ("local", "files"):
        shutil.rmtree(settings.data_dir / name, ignore_errors=True)
    print(f"console state in {settings.data_dir} cleared: the demo starts afresh", flush=True)


def _keep_secrets(config: Config) -> None:
    """The CI token read (from its variable or its _FILE), secret-looking deploy.env values
    registered for redaction, then every secret taken out of the process environment."""
    from bot.redaction import register_secrets, secret_name
    from bot.settings import SECRET_VARIABLES, read_ci_token, scrub_secrets

    names = list(SECRET_VARIABLES)
    if config.ci is not None:
        read_ci_token(os.environ, config.ci.token_env)
        names.append(config.ci.token_env)
    register_secrets(
        value
        for env in config.environments.values()
        for name, value in env.deploy.env.items()
        if secret_name(name)
    )
    scrub_secrets(names)


if __name__ == "__main__":
    sys.exit(main())
