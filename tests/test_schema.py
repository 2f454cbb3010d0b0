"""The schema: Alembic revisions that make exactly the models' tables, applied under a lock."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from bot.store import Base, Store, schema
from tests.conftest import clean_env, free_port


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_the_migrations_make_exactly_the_models_tables(store_url: str) -> None:
    # Run on SQLite and PostgreSQL: the models' metadata is what the bot's code expects, the
    # revisions are what a database gets. Any difference (a model changed without a
    # revision) fails here.
    store = Store(store_url)
    assert store.schema.before is None
    assert store.schema.after == schema.head()
    store.close()
    assert differences(store_url) == []


def test_a_database_from_before_the_migrations_is_stamped_then_upgraded(store_url: str) -> None:
    # A bot from before the migrations made its tables with create_all: exactly revision
    # 0001's, and no alembic_version table.
    Path(make_url(store_url).database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(store_url)
    with engine.connect() as connection:
        command.upgrade(schema._config(connection), schema.BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text(
                "INSERT INTO timers (kind, key, payload, due_at, attempts) "
                "VALUES ('escalation.deadline', '7', '{}', :due, 0)"
            ),
            {"due": datetime(2026, 12, 1, tzinfo=UTC)},
        )
        connection.commit()
    engine.dispose()

    store = Store(store_url)
    assert (store.schema.before, store.schema.after) == (None, schema.head())
    assert [t.key for t in store.pending_timers()] == ["7"]  # its rows are kept
    assert store.lease("checking") is None  # the new revision's table is there, empty
    store.close()
    assert differences(store_url) == []


def db_upgrade(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(EVENTMESH_DATABASE_URL=url),
    )


def run_together(url: str, count: int) -> list[tuple[int, str]]:
    processes = [db_upgrade(url) for _ in range(count)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        results.append((process.returncode, out + err))
    return results


def test_db_upgrade_run_by_several_at_once_on_an_empty_database(
    postgres_database: str, tmp_path: Path
) -> None:
    # create_all raced here (a duplicate key in pg_type, 10 of 10 times): the lock orders them.
    for url in (postgres_database, f"sqlite:///{tmp_path / 'bot.db'}"):
        results = run_together(url, 4)
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        outputs = [output for _, output in results]
        assert "Traceback" not in "".join(outputs)
        upgraded = [o for o in outputs if f"schema upgraded from nothing to {schema.head()}" in o]
        assert len(upgraded) == 1, outputs
        assert sum(f"schema already at {schema.head()}" in o for o in outputs) == 3, outputs
        assert differences(url) == []
        assert "leases" in inspect(create_engine(url)).get_table_names()


def test_db_upgrade_of_an_unreachable_database_is_one_clear_line() -> None:
    url = f"postgresql+psycopg://eventmesh:hunter2secret@127.0.0.1:{free_port()}/bot"
    ((code, output),) = run_together(url, 1)
    assert code == 2, output
    assert "Traceback" not in output
    assert "EVENTMESH_DATABASE_URL" in output and "127.0.0.1" in output
    assert "hunter2secret" not in output
    assert len(output.strip().splitlines()) == 1, output


def test_the_revision_file_names_say_alembics_head() -> None:
    # The bot finds a database at head without Alembic, by the newest revision file's number.
    assert schema.newest_revision() == schema.head()


def test_a_store_already_at_head_opens_without_importing_alembic(tmp_path: Path) -> None:
    # Alembic and its templates (mako) are MiBs resident: a bot restarting on its database
    # (every start but the first after an upgrade) should not carry them.
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    Store(url).close()  # the first start: the revisions applied
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bot.store import Store; s = Store(sys.argv[1]); "
            "print(s.schema.before, s.schema.after, 'alembic' in sys.modules, "
            "'mako' in sys.modules)",
            url,
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert opened.stdout.split() == [schema.head(), schema.head(), "False", "False"], opened.stderr
