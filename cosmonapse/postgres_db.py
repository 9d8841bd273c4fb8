"""``PostgresDatabase``: psycopg 3's blocking API in worker threads, so it serves asyncio and trio alike.

psycopg's async API runs on asyncio only.  Like ``SqliteDatabase``, every call
here is a function of a connection run in ``anyio.to_thread.run_sync``; unlike
it, several calls may run at once, each on its own connection:

* a small pool: at most ``max_size`` connections, each used by one thread at a
  time (a ``CapacityLimiter`` bounds the threads), opened lazily and kept idle
  for the next call; ``min_size`` are opened by ``open()``;
* connections are in autocommit mode; a call asked to be a transaction runs in
  ``with conn.transaction()`` (ROLLBACK on any error);
* every wait is bounded: ``connect_timeout_s`` for connecting and
  ``statement_timeout_s`` (the server's ``statement_timeout``, lock waits
  included) for each statement, so a cancelled caller (its thread cannot be
  interrupted) waits at most that long;
* a connection the server dropped (a restart, an idle timeout) is discarded,
  and a call that failed because a pooled connection turned out dead is retried
  once on a fresh one — the backends' writes are idempotent or transactional,
  so a retry never applies a write twice through the Dendrite (IMPRINTs carry
  their idempotency key);
* the *schema* function runs once, on the first connection, in a transaction;
* fork-safe: a forked child (gunicorn ``--preload``, multiprocessing) never
  touches a connection its parent opened — it parks them (closing one would end
  the parent's session) and opens its own;
* connections say ``application_name=cosmonapse`` unless the dsn names one (``pg_stat_activity``).

psycopg is imported when a backend is built, so ``import cosmonapse`` works
without the ``postgres`` extra.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["DEFAULT_STATEMENT_TIMEOUT_S", "PostgresDatabase", "require_psycopg"]

R = TypeVar("R")

#: Bound on every statement (and on waiting for a lock inside one).
DEFAULT_STATEMENT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def require_psycopg() -> None:
    """Fail at construction, with the install command, when psycopg is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ImportError(
            "the Postgres backends need psycopg 3: pip install 'cosmonapse[postgres]' (or 'psycopg[binary]')"
        ) from None


class PostgresDatabase:
    """Connections to one database (*dsn*: a ``postgresql://`` URL or ``key=value`` string)."""

    def __init__(
        self,
        dsn: str,
        schema: Callable[[Connection[dict[str, Any]]], None],
        *,
        min_size: int = 1,
        max_size: int = 5,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        if not dsn:
            raise ValueError("a Postgres backend needs a dsn, e.g. postgresql://user@host:5432/db")
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, not {min_size}, {max_size}")
        if connect_timeout_s <= 0 or statement_timeout_s <= 0:
            raise ValueError("connect_timeout_s and statement_timeout_s must be > 0")
        require_psycopg()
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        # Parsed now, so a malformed dsn fails here; our application_name unless the dsn has one.
        named = "application_name" in conninfo_to_dict(dsn)
        self._conninfo = dsn if named else make_conninfo(dsn, application_name="cosmonapse")
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self._schema = schema
        self._schema_ready = False
        self._lock = threading.Lock()  # guards the idle list, the generation and the schema flag
        self._idle: list[Connection[dict[str, Any]]] = []
        self._generation = 0  # bumped by close(): connections of an older one are closed on return
        self._limiter: anyio.CapacityLimiter | None = None
        self._pid = os.getpid()
        self._parked: list[Connection[dict[str, Any]]] = []  # a parent's, after a fork: never used

    def __repr__(self) -> str:
        return f"<PostgresDatabase max_size={self.max_size}>"  # never the dsn: it may hold a password

    # -- calls -----------------------------------------------------------------------
    async def run(self, fn: Callable[[Connection[dict[str, Any]]], R], *, transaction: bool = False) -> R:
        """``fn(conn)`` in a worker thread on a pooled connection; inside one transaction when asked."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_size)
        return await anyio.to_thread.run_sync(self._call, fn, transaction, limiter=self._limiter)

    async def open(self) -> None:
        """Connect now: ``min_size`` connections (at least one, so a bad dsn fails here)."""
        await self.run(lambda conn: None)
        for _ in range(self.min_size - 1):
            await anyio.to_thread.run_sync(self._fill_one)

    async def close(self) -> None:
        """Close idle connections; busy ones close when their call ends.  A later call reconnects."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        if idle:
            await anyio.to_thread.run_sync(lambda: [conn.close() for conn in idle])

    def _after_fork(self) -> None:
        """In a forked child: park the parent's connections and start afresh (one thread runs here)."""
        self._pid = os.getpid()
        self._parked.extend(self._idle)
        self._idle = []
        self._lock = threading.Lock()  # another thread may have held the parent's at the fork
        self._limiter = None  # it belonged to the parent's event loop
        self._generation += 1  # connections the parent had checked out are not ours either

    # -- in the worker thread ------------------------------------------------------------
    def _call(self, fn: Callable[[Connection[dict[str, Any]]], R], transaction: bool) -> R:
        import psycopg

        conn, generation, reused = self._checkout()
        try:
            result = self._apply(conn, fn, transaction)
        except psycopg.OperationalError:
            self._checkin(conn, generation)
            if not (reused and conn.broken):
                raise
            # A pooled connection the server had dropped: once more on a fresh one.
            conn, generation = self._connect(), self._generation
            try:
                result = self._apply(conn, fn, transaction)
            except BaseException:
                self._checkin(conn, generation)
                raise
        except BaseException:
            self._checkin(conn, generation)
            raise
        self._checkin(conn, generation)
        return result

    @staticmethod
    def _apply(
        conn: Connection[dict[str, Any]], fn: Callable[[Connection[dict[str, Any]]], R], transaction: bool
    ) -> R:
        if not transaction:
            return fn(conn)
        with conn.transaction():
            return fn(conn)

    def _checkout(self) -> tuple[Connection[dict[str, Any]], int, bool]:
        with self._lock:
            generation = self._generation
            if self._idle:
                return self._idle.pop(), generation, True
        return self._connect(), generation, False

    def _checkin(self, conn: Connection[dict[str, Any]], generation: int) -> None:
        import psycopg

        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and generation == self._generation and len(self._idle) < self.max_size:
                self._idle.append(conn)
                return
        conn.close()

    def _fill_one(self) -> None:
        conn = self._connect()
        self._checkin(conn, self._generation)

    def _connect(self) -> Connection[dict[str, Any]]:
        import psycopg
        from psycopg import sql
        from psycopg.rows import DictRow, dict_row

        conn = psycopg.Connection[DictRow].connect(
            self._conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=max(1, math.ceil(self.connect_timeout_s)),
        )
        try:
            ms = max(1, round(self.statement_timeout_s * 1000))
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(ms)))
            with self._lock:
                ready = self._schema_ready
            if not ready:
                with conn.transaction():
                    self._schema(conn)
                with self._lock:
                    self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        return conn
