"""The store watch asks the database only when nothing else the bot did had an answer lately."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from bot.store import Store
from bot.store_watch import StoreWatch
from bot.telemetry import Telemetry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    yield opened
    opened.close()


def statements_of(store: Store, work: object) -> list[str]:
    """The SQL statements the database was sent while `work` (a coroutine) ran."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        asyncio.run(work)  # type: ignore[arg-type]
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return sent


def test_an_answer_within_the_interval_counts_as_the_check(store: Store) -> None:
    telemetry = Telemetry()
    watch = StoreWatch(store, telemetry, every=timedelta(minutes=5))
    store.lease("checking")  # any statement of the bot's, answered

    assert statements_of(store, watch.check()) == []
    assert watch.problem is None
    assert telemetry.registry.get_sample_value("eventmesh_bot_store_reachable") == 1


def test_without_a_recent_answer_it_asks_itself(store: Store) -> None:
    watch = StoreWatch(store, Telemetry(), every=timedelta(0))
    store.lease("checking")  # answered, but longer ago than an interval of 0

    assert statements_of(store, watch.check()) == ["SELECT 1"]


def test_a_deleted_sqlite_file_is_noticed_at_the_next_check_despite_a_recent_answer(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = Telemetry()
    watch = StoreWatch(store, telemetry, every=timedelta(minutes=5))
    store.lease("checking")
    (tmp_path / "bot.db").unlink()

    with caplog.at_level(logging.ERROR, logger="bot.store_watch"):
        asyncio.run(watch.check())

    assert watch.problem is not None and "deleted" in watch.problem
    assert telemetry.registry.get_sample_value("eventmesh_bot_store_reachable") == 0
    assert "the store is unreachable" in caplog.text
