"""``SqliteRegistryStore``: the registry in one SQLite file (the §21 ``neurons`` table).

SQLite runs off the event loop (``anyio.to_thread.run_sync``) on one
connection guarded by a lock, in WAL mode; each operation is one transaction,
so the stale sweep cannot deregister a record a heartbeat just refreshed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from ..sqlite_db import SqliteDatabase
from ..tombstone_sql import SQLITE_SCHEMA as _TOMBSTONES
from ..tombstone_sql import sqlite_load, sqlite_remember
from .record import NeuronRecord
from .store import filter_records

__all__ = ["SqliteRegistryStore"]

R = TypeVar("R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS neurons (
    neuron_id TEXT PRIMARY KEY,
    capabilities TEXT NOT NULL DEFAULT '[]',
    version TEXT,
    status TEXT NOT NULL DEFAULT 'registered',
    last_heartbeat TEXT,
    registered_at TEXT NOT NULL
);
"""
_HEARTBEAT_STATUSES = ("registered", "draining")


def _record(row: sqlite3.Row) -> NeuronRecord:
    return NeuronRecord(
        neuron_id=row["neuron_id"],
        capabilities=json.loads(row["capabilities"] or "[]"),
        version=row["version"],
        status=row["status"],
        last_heartbeat=row["last_heartbeat"],
        registered_at=row["registered_at"],
    )


class SqliteRegistryStore:
    """A registry in ``path`` (``":memory:"`` for a private in-memory database)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path: str = str(path)
        self._db = SqliteDatabase(self.path, _SCHEMA + _TOMBSTONES)

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return await self._db.run(fn, transaction=True)

    async def connect(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        await self._db.close()

    async def upsert(self, record: NeuronRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO neurons (neuron_id, capabilities, version, status, last_heartbeat, "
                "registered_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(neuron_id) DO UPDATE SET "
                "capabilities = excluded.capabilities, version = excluded.version, status = excluded.status, "
                "last_heartbeat = excluded.last_heartbeat",
                (
                    record.neuron_id,
                    json.dumps(list(record.capabilities)),
                    record.version,
                    record.status,
                    record.last_heartbeat.isoformat() if record.last_heartbeat else None,
                    record.registered_at.isoformat(),
                ),
            )

        await self._run(write)

    async def mark_deregistered(self, neuron_id: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE neurons SET status = 'deregistered' WHERE neuron_id = ?", (neuron_id,)
            )
        )

    async def touch_heartbeat(self, neuron_id: str, ts: datetime, status: str | None = None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO neurons (neuron_id, last_heartbeat, registered_at) VALUES (?, ?, ?) "
                "ON CONFLICT(neuron_id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat "
                "WHERE neurons.status != 'deregistered'",
                (neuron_id, ts.isoformat(), ts.isoformat()),
            )
            if status in _HEARTBEAT_STATUSES:
                conn.execute(
                    "UPDATE neurons SET status = ? WHERE neuron_id = ? AND status != 'deregistered'",
                    (status, neuron_id),
                )

        await self._run(write)

    async def get(self, neuron_id: str) -> NeuronRecord | None:
        def read(conn: sqlite3.Connection) -> NeuronRecord | None:
            row = conn.execute("SELECT * FROM neurons WHERE neuron_id = ?", (neuron_id,)).fetchone()
            return _record(row) if row is not None else None

        return await self._run(read)

    async def records(
        self, capability: str | None = None, include_deregistered: bool = False
    ) -> list[NeuronRecord]:
        rows = await self._run(lambda conn: conn.execute("SELECT * FROM neurons").fetchall())
        return filter_records([_record(r) for r in rows], capability, include_deregistered)

    async def mark_stale(self, cutoff: datetime, keep: frozenset[str] = frozenset()) -> list[str]:
        def sweep(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT * FROM neurons WHERE status != 'deregistered'").fetchall()
            stale = [
                r["neuron_id"] for r in rows if _record(r).last_seen < cutoff and r["neuron_id"] not in keep
            ]
            conn.executemany(
                "UPDATE neurons SET status = 'deregistered' WHERE neuron_id = ?", [(i,) for i in stale]
            )
            return stale

        return await self._run(sweep)

    # -- STOP tombstones (stops.StopLedger): a restarted worker refuses a STOPped trace's TASKs --
    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        await self._run(lambda conn: sqlite_remember(conn, trace_id, ttl_s, max_entries))

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        return await self._run(lambda conn: sqlite_load(conn, max_entries))
