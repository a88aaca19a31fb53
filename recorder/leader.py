"""Which recorder polls a source: the one holding that source's lock.

Several recorders may run against one database (on two hosts, for
availability). Each source has one lock; a recorder polls a source only while
it holds the lock, takes it when it is free and keeps it until it exits. A
recorder that dies loses its locks with its process, whatever killed it: a
PostgreSQL advisory lock belongs to the database session, which ends with the
connection, and an ``flock`` is released by the kernel with the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from recorder.db import normalise_url

log = logging.getLogger(__name__)

# The lock's connection: bounded waits, and a dead peer noticed within about
# 25 s on both sides. The options ask the server to probe this session, so
# that it ends the session of a recorder whose host died or went off the
# network, releasing its locks: another recorder then takes over, where the
# kernel's default keepalive would wait two hours.
_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}
POSTGRES_LOCK_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    **{f"keepalives_{name}": value for name, value in _KEEPALIVE.items()},
    "options": " ".join(
        f"-c tcp_keepalives_{name}={value}" for name, value in _KEEPALIVE.items()
    ),
}


class SourceLock(Protocol):
    """The lock of one source, held by at most one recorder at a time."""

    def hold(self) -> bool:
        """Whether this recorder holds the lock, taking it if it is free."""

    def release(self) -> None:
        """Let the lock go, so that another recorder may take it."""


def make_lock_engine(database_url: str) -> Engine:
    """An engine for PostgreSQL lock connections: no pool, keepalives on."""
    return create_engine(
        normalise_url(database_url),
        poolclass=NullPool,
        connect_args=POSTGRES_LOCK_CONNECT_ARGS,
    )


def lock_key(source_name: str) -> int:
    """A stable signed 64-bit key for a source (Python's ``hash`` is salted)."""
    digest = hashlib.sha256(f"zuul-status:poll:{source_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresSourceLock:
    """A session-level advisory lock on a connection of its own.

    The connection comes from an engine without a pool: a pool would recycle
    or hand out the connection, and the lock would go with its session.
    """

    def __init__(self, engine: Engine, source_name: str):
        self._engine = engine
        self._key = lock_key(source_name)
        self._connection: Connection | None = None

    def hold(self) -> bool:
        if self._connection is not None:
            if self._alive():
                return True
            self.release()
        connection = self._engine.connect().execution_options(
            # No transaction left open between polls: the lock does not need
            # one, and an idle transaction would hold back VACUUM.
            isolation_level="AUTOCOMMIT"
        )
        try:
            taken = connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            )
        except SQLAlchemyError:
            connection.close()
            raise
        if taken:
            self._connection = connection
        else:
            connection.close()
        return bool(taken)

    def release(self) -> None:
        if self._connection is not None:
            # Closing the session releases its advisory locks.
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except SQLAlchemyError:
                log.debug("closing a lock connection failed", exc_info=True)

    def _alive(self) -> bool:
        """Whether the session that holds the lock still exists."""
        try:
            self._connection.scalar(text("SELECT 1"))
        except SQLAlchemyError:
            log.warning("the database connection holding a source lock was lost")
            return False
        return True


class FileSourceLock:
    """An exclusive ``flock`` on a file next to the SQLite database."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[bytes] | None = None

    def hold(self) -> bool:
        if self._file is not None:
            if self._same_file():
                return True
            log.warning("lock file %s was replaced; taking it again", self.path)
            self.release()
        # Group-writable: the recorders of one host share the service's group.
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        lock_file = os.fdopen(descriptor, "r+b")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        except BaseException:
            lock_file.close()
            raise
        self._file = lock_file
        return True

    def release(self) -> None:
        if self._file is not None:
            # Closing the file releases the flock; the file itself stays, so
            # that every recorder keeps locking the same inode.
            lock_file, self._file = self._file, None
            lock_file.close()

    def _same_file(self) -> bool:
        """Whether the locked file is still the one at ``path``."""
        try:
            return os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path))
        except FileNotFoundError:
            return False


class SoleSourceLock:
    """For an in-memory SQLite database, which no other process can reach."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Leadership:
    """The source locks of one recorder, made on first use."""

    def __init__(self, database_url: str):
        self._url = make_url(normalise_url(database_url))
        self._engine: Engine | None = None
        self._locks: dict[str, SourceLock] = {}
        self._held: set[str] = set()
        self._guard = threading.Lock()

    def holds(self, source_name: str) -> bool:
        """Whether this recorder may poll ``source_name`` now (taking its lock)."""
        with self._guard:
            if source_name not in self._locks:
                self._locks[source_name] = self._make_lock(source_name)
            lock = self._locks[source_name]
        try:
            held = lock.hold()
        except (SQLAlchemyError, OSError) as error:
            log.warning("could not take the lock of source %s: %s", source_name, error)
            held = False
        with self._guard:
            if held and source_name not in self._held:
                log.info(
                    "took the lock of source %s: this recorder polls it", source_name
                )
                self._held.add(source_name)
            elif not held and source_name in self._held:
                log.warning("lost the lock of source %s", source_name)
                self._held.discard(source_name)
        return held

    def release_all(self) -> None:
        """Let every lock go, so that another recorder takes over at once."""
        with self._guard:
            for lock in self._locks.values():
                lock.release()
            self._locks.clear()
            self._held.clear()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _make_lock(self, source_name: str) -> SourceLock:
        if self._url.get_backend_name() != "sqlite":
            if self._engine is None:
                self._engine = make_lock_engine(
                    self._url.render_as_string(hide_password=False)
                )
            return PostgresSourceLock(self._engine, source_name)
        database = self._url.database or ":memory:"
        if database.startswith("file:"):
            if "mode=memory" in database:
                return SoleSourceLock()
            database = database.removeprefix("file:").split("?")[0]
        if database == ":memory:":
            return SoleSourceLock()
        return FileSourceLock(Path(f"{database}.{source_name}.lock"))


class SourceBusy(Exception):
    """A recorder holds the lock of a source that a bulk change needs."""


@contextmanager
def no_recorder(database_url: str, source_names: Sequence[str]) -> Iterator[None]:
    """Hold the locks of ``source_names`` while rewriting their derived rows.

    A recorder keeps the build rows of the last snapshot in memory; rows
    rebuilt under it would be written over or lost. Raises :class:`SourceBusy`
    when a recorder polls one of the sources.
    """
    leadership = Leadership(database_url)
    try:
        for name in source_names:
            with leadership._guard:
                lock = leadership._locks[name] = leadership._make_lock(name)
            if not lock.hold():
                raise SourceBusy(
                    f"a recorder is recording source {name!r}: stop it first, "
                    "then run this again"
                )
        yield
    finally:
        leadership.release_all()
