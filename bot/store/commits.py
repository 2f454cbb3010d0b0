"""Commits that wrote chosen tables, told to whoever watches them: SQLAlchemy's session events.

A view drawn from several concerns' rows (the App Home: locks, incidents, alerts, approvals,
health, overrides) must follow every change to them, whichever flow made it — a lock freed by
the recovery job, an approval expired by its timer, an incident escalated by its deadline.
Rather than a call in each of those flows, the store says so itself: every session of the
process is watched (`do_orm_execute` for INSERT/UPDATE/DELETE statements, `after_flush` for
objects added, changed or deleted), the tables a transaction wrote are kept in the session,
and after its commit — never before, so a watcher reading the rows sees the change — each
watcher of that engine whose tables were among them is called with them. A transaction
rolled back tells nobody.

Watchers are called in the thread that committed (often a worker thread of
`asyncio.to_thread`): they must be quick and thread-safe, e.g. hand over to their event loop.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

log = logging.getLogger(__name__)

Watcher = Callable[[frozenset[str]], None]

_WRITTEN = "eventmesh_written_tables"  # the key in Session.info: tables written so far
_lock = threading.Lock()
# Per engine, so two stores in one process (tests) never hear each other's commits.
_watchers: weakref.WeakKeyDictionary[Engine, tuple[tuple[frozenset[str], Watcher], ...]] = (
    weakref.WeakKeyDictionary()
)


def watch_commits(engine: Engine, tables: Iterable[str], watcher: Watcher) -> Callable[[], None]:
    """Call `watcher(tables written)` after every commit on `engine` that wrote any of
    `tables`; returns the function that stops it."""
    entry = (frozenset(tables), watcher)
    with _lock:
        _watchers[engine] = (*_watchers.get(engine, ()), entry)

    def unwatch() -> None:
        with _lock:
            kept = tuple(e for e in _watchers.get(engine, ()) if e is not entry)
            if kept:
                _watchers[engine] = kept
            else:
                _watchers.pop(engine, None)

    return unwatch


def _note(session: Session, table: str | None) -> None:
    if table is not None:
        session.info.setdefault(_WRITTEN, set()).add(table)


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        _note(state.session, getattr(table, "name", None))


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, flush: UOWTransaction) -> None:
    for record in (*session.new, *session.dirty, *session.deleted):
        _note(session, getattr(getattr(type(record), "__table__", None), "name", None))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    written: set[str] | None = session.info.pop(_WRITTEN, None)
    if not written:
        return
    bind: Any = session.bind
    engine = getattr(bind, "engine", bind)  # a session bound to a Connection: its engine
    with _lock:
        watching = _watchers.get(engine, ()) if isinstance(engine, Engine) else ()
    for tables, watcher in watching:
        seen = tables & written
        if seen:
            try:
                watcher(frozenset(seen))
            except Exception:  # a watcher's failure is not the committing caller's
                log.exception("a watcher of %s failed", ", ".join(sorted(seen)))


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_WRITTEN, None)
