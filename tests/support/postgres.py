"""Throwaway databases on the machine's PostgreSQL (127.0.0.1:5432, user postgres, trust auth).

A database per test (or per bot) keeps runs apart: other workers, other engineers' suites on
the same server. Each is dropped WITH (FORCE), which also ends a killed bot's sessions.
"""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
ADMIN_URL = f"{SERVER}/postgres"


def unreachable_reason() -> str | None:
    """Why the server cannot be used (None: it answers)."""
    engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        return f"PostgreSQL is not reachable at {ADMIN_URL}: {exc.orig}"
    finally:
        engine.dispose()
    return None


def create_database(prefix: str = "evt") -> str:
    """A new, empty database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _administer(f'CREATE DATABASE "{name}"')
    return f"{SERVER}/{name}"


def drop_database(url: str) -> None:
    _administer(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _administer(statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()
