"""``SqliteDatabase``: one SQLite connection, used off the event loop, one call at a time.

The SQLite Engram and the SQLite registry store both need the same plumbing: a
connection opened lazily in a worker thread (WAL, a busy timeout, the schema),
calls serialised by an anyio lock (one writer, no "database is locked"), each
call run in ``anyio.to_thread``, optionally inside ``BEGIN IMMEDIATE`` …
``COMMIT`` (``ROLLBACK`` on any error), and a close that works from any task.
A *migrate* step, run in its own ``BEGIN IMMEDIATE`` transaction after the
schema, brings files written by older versions (or the reference) up to date.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["SqliteDatabase"]

R = TypeVar("R")


class SqliteDatabase:
    """A file (or ``":memory:"``) with *schema* applied on first use."""

    def __init__(
        self, path: str, schema: str, migrate: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        self.path: str = str(path)
        self._schema = schema
        self._migrate = migrate
        self._conn: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._lock: anyio.Lock | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], R], *, transaction: bool = False) -> R:
        """``fn(conn)`` in a worker thread; inside one transaction when asked."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            return await anyio.to_thread.run_sync(self._in_thread, fn, transaction)

    def _in_thread(self, fn: Callable[[sqlite3.Connection], R], transaction: bool) -> R:
        with self._thread_lock:
            if self._conn is None:
                self._conn = self._open()
            conn = self._conn
            return self._transaction(conn, fn) if transaction else fn(conn)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=5000")  # first: another process may hold the file
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(self._schema)
            if self._migrate is not None:
                self._transaction(conn, self._migrate)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Close the connection (a later call opens a new one)."""

        def close_conn() -> None:
            with self._thread_lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(close_conn)
