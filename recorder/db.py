"""Engines and sessions for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite connection waits for another's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Use psycopg 3 for a bare ``postgresql://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, writer: bool = False) -> Engine:
    """An engine for the database at ``url``; ``writer`` takes SQLite's lock early."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping survives a restarted server instead of failing one request.
        engine = create_engine(url, pool_pre_ping=True)
        _configure_postgres(engine)
        _engines.add(engine)
        return engine

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _configure_sqlite(engine, writer)
    return engine


# Every PostgreSQL engine made, so that a process that makes many (the test
# suite) can close their connections instead of waiting for the collector.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def dispose_all_engines() -> None:
    """Close the pooled connections of every PostgreSQL engine still alive."""
    for engine in list(_engines):
        engine.dispose()


def _configure_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # JIT compiling a query takes a quarter of a second here, more than
        # any page's query runs: the job pages' estimates crossed its threshold.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine, writer: bool) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily, after the first
    # read; a later write then fails with "database is locked" whatever the
    # busy timeout. We issue BEGIN ourselves: IMMEDIATE for the writer, so it
    # takes the write lock up front and waits for it within the timeout.
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable in WAL mode except for the last commit on power loss.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)


def dispose_after_fork(engine: Engine) -> None:
    """Make a forked child open its own connections instead of sharing the parent's."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after the transaction,
    # which views and the recorder's log line rely on.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
