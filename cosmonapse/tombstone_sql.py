"""STOP tombstones in SQL: the table and the two calls every durable backend shares.

A STOP's tombstone (a trace that must never run again) is kept in the database
the Dendrite already uses — the SQLite or Postgres registry store, or a hosted
SQLite or Postgres Engram — so a worker that restarts, or another worker on the
same database, refuses the trace's TASKs too.  The policy is the in-memory one
(``stops.StopTombstones``): each tombstone lives ``ttl_s`` (1 h), at most
``max_entries`` (10,000) are kept, the oldest go first; expired rows are
deleted on the next write.

Times: SQLite is one file on one machine, so expiry is that machine's wall
clock (``time.time()``).  Postgres is shared by many machines, so expiry uses
the server's clock (``now()``) and loads return *seconds left*, never a
timestamp: clients' clock skew does not matter.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any, LiteralString

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["PG_SCHEMA", "SQLITE_SCHEMA", "pg_load", "pg_remember", "sqlite_load", "sqlite_remember"]

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS stop_tombstones (
    trace_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_stop_tombstones_expires ON stop_tombstones(expires_at);
"""

PG_SCHEMA: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS cosmonapse_stop_tombstones (
        trace_id TEXT PRIMARY KEY,
        expires_at TIMESTAMPTZ NOT NULL,
        stopped_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE INDEX IF NOT EXISTS idx_cosmonapse_stop_tombstones_expires
        ON cosmonapse_stop_tombstones (expires_at)""",
)


def sqlite_remember(conn: sqlite3.Connection, trace_id: str, ttl_s: float, max_entries: int) -> None:
    """Keep *trace_id* for *ttl_s* more seconds; drop expired rows and any beyond *max_entries*."""
    now = time.time()
    conn.execute(
        "INSERT INTO stop_tombstones (trace_id, expires_at) VALUES (?, ?) ON CONFLICT(trace_id) "
        "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
        (trace_id, now + ttl_s),
    )
    conn.execute("DELETE FROM stop_tombstones WHERE expires_at <= ?", (now,))
    conn.execute(
        "DELETE FROM stop_tombstones WHERE trace_id IN "
        "(SELECT trace_id FROM stop_tombstones ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
        (max_entries,),
    )


def sqlite_load(conn: sqlite3.Connection, max_entries: int) -> list[tuple[str, float]]:
    """The live tombstones as (trace id, seconds left), the one expiring first first."""
    now = time.time()
    rows = conn.execute(
        "SELECT trace_id, expires_at - ? FROM stop_tombstones WHERE expires_at > ? "
        "ORDER BY expires_at DESC LIMIT ?",
        (now, now, max_entries),
    ).fetchall()
    return [(str(r[0]), float(r[1])) for r in reversed(rows)]


def pg_remember(conn: Connection[dict[str, Any]], trace_id: str, ttl_s: float, max_entries: int) -> None:
    """As ``sqlite_remember``, on the server's clock."""
    conn.execute(
        "INSERT INTO cosmonapse_stop_tombstones (trace_id, expires_at) "
        "VALUES (%s, now() + make_interval(secs => %s)) ON CONFLICT (trace_id) DO UPDATE SET "
        "expires_at = GREATEST(cosmonapse_stop_tombstones.expires_at, EXCLUDED.expires_at)",
        (trace_id, float(ttl_s)),
    )
    conn.execute("DELETE FROM cosmonapse_stop_tombstones WHERE expires_at <= now()")
    conn.execute(
        "DELETE FROM cosmonapse_stop_tombstones WHERE trace_id IN "
        "(SELECT trace_id FROM cosmonapse_stop_tombstones ORDER BY expires_at DESC OFFSET %s)",
        (max_entries,),
    )


def pg_load(conn: Connection[dict[str, Any]], max_entries: int) -> list[tuple[str, float]]:
    """As ``sqlite_load``: seconds left by the server's clock."""
    rows = conn.execute(
        "SELECT trace_id, EXTRACT(EPOCH FROM expires_at - now())::float8 AS left_s "
        "FROM cosmonapse_stop_tombstones WHERE expires_at > now() ORDER BY expires_at DESC LIMIT %s",
        (max_entries,),
    ).fetchall()
    return [(str(r["trace_id"]), float(r["left_s"])) for r in reversed(rows)]
